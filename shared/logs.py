"""JSON-lines logging; every line carries the service name and the current correlation id."""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from shared import context


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
            "correlation_id": context.correlation_id.get(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            line.update(extra)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; route its lines through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "aiokafka"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def log_fields(**fields: object) -> dict:
    """`logger.info("msg", extra=log_fields(order="R1"))` puts the fields on the JSON line."""
    return {"fields": fields}


def route_template(scope) -> str:
    """The route a request matched (`/api/v1/orders/{order_hash}`), for logs and metrics:
    never the raw path, which holds ids that open orders (GetCandy's are bearer credentials).
    FastAPI's effective route context has the whole template, prefixes included; without it,
    the template is rebuilt from the route's own path below its routers' prefixes."""
    effective = getattr((scope.get("fastapi") or {}).get("effective_route_context"), "path_format", None)
    if effective:
        return effective
    template = getattr(scope.get("route"), "path", None)
    if template is None:
        return "unmatched"
    if ":path}" in template:
        return template
    # FastAPI keeps included routers apart: the route knows its path below its routers'
    # prefixes only. Its parameters match one segment each, so what precedes its segments in
    # the request's path is those prefixes, which are fixed text.
    segments = scope.get("path", "").split("/")
    return "/".join(segments[:len(segments) - template.count("/")]) + template
