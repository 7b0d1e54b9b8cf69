"""JSON responses that keep money exact: Decimal becomes a string, never a float.

(FastAPI's default encoder turns Decimal into float, so endpoints that return money
return `json_response(...)`.)
"""
from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from fastapi.responses import Response

JSON_SCALARS = (Decimal, datetime, date, uuid.UUID)


def json_scalar(value: Any) -> Any:
    """What JSON holds for the values it has no type of: money and ids as strings, times in ISO."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=json_scalar, separators=(",", ":")).encode()


def json_response(value: Any, status_code: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(value), status_code=status_code, media_type="application/json", headers=headers)


def dumps_with_numbers(value: Any) -> bytes:
    """JSON in which Decimal is a number written digit for digit (GetCandy's money), as
    no placeholder could be told apart from a customer's own text."""
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts).encode()


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a JSON number: {value}")
        out.append(format(value, "f"))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key)))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        out.append(json.dumps(value, default=json_scalar))
