"""What every HTTP app of Tillstream has (the services', the gateway's, the internal listener's):
request ids that become the correlation ids of the events a request causes, request metrics and
the access log (`RequestContext`), the body guard, liveness."""
from __future__ import annotations

import logging
import time

from fastapi import FastAPI

from shared import context, metrics
from shared.http_limits import BodyGuard, Render, internal_error_body
from shared.internal import install_probes
from shared.logs import log_fields, route_template
from shared.validation import MAX_BODY_BYTES

access_log = logging.getLogger("tillstream.access")
_QUIET_ROUTES = {"/healthz", "/readyz", "/metrics"}


class RequestContext:
    """Request id (→ correlation id of the events a request causes), metrics and the access
    log. Plain ASGI: Starlette's `@app.middleware("http")` runs every request through an
    extra task and memory streams, a cost paid on each of the gateway's internal calls."""

    def __init__(self, app, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        if not request_id or len(request_id) > 128:  # a client's id, within reason, or our own
            request_id = context.new_id()
        token = context.correlation_id.set(request_id)
        # A service called by another (the saga) is told what its events are caused by; the
        # gateway's public callers are not listened to.
        causation = None if self.service == "gateway" else next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-causation-id"), None)
        causation_token = context.causation_id.set(causation if causation and len(causation) <= 128 else None)
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", request_id.encode("latin-1"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = route_template(scope)
            metrics.HTTP_REQUESTS.labels(self.service, scope["method"], route, str(status)).observe(elapsed)
            if route not in _QUIET_ROUTES:  # logged under the request's correlation id
                access_log.info("request", extra=log_fields(method=scope["method"], route=route,
                                                            status=status, ms=round(elapsed * 1000, 2)))
            context.correlation_id.reset(token)
            context.causation_id.reset(causation_token)


def install_common(app: FastAPI, service: str, *, render: Render = internal_error_body,
                   max_body_bytes: int | None = None, capped_prefix: str = "/") -> None:
    """Request ids, request metrics and liveness, and the body guard (shared/http_limits.py):
    shared by the services and the gateway (`/metrics` and `/readyz` are internal:
    shared/internal.py). `render` shapes the guard's refusals for the caller."""

    # Inside the request context, so a refused body is logged and measured like any answer.
    app.add_middleware(BodyGuard, render=render, max_body_bytes=max_body_bytes, capped_prefix=capped_prefix)
    app.add_middleware(RequestContext, service=service)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "service": service}


def create_internal_app(name: str, readiness) -> FastAPI:
    """The internal listener's app of a process that also serves the public API (the gateway
    alone, or the one process): `/readyz`, `/metrics`, `/healthz`; the one process adds its
    services' bus routes (tillstream/host.py)."""
    app = FastAPI(title=f"tillstream-{name}-internal", openapi_url=None, docs_url=None, redoc_url=None)
    install_common(app, name, max_body_bytes=MAX_BODY_BYTES)
    install_probes(app, readiness)
    return app
