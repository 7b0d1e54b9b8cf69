"""Reading a Solidus request: the query string, then a JSON or form body on top, as Rails
merges them; bounded in size (the admission layer), depth and fields."""
from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import Request

from shared.validation import MAX_JSON_DEPTH, BadJson, ascii_int, parse_json_object
from services.gateway.solidus.errors import bad_request, missing_param

MAX_FORM_FIELDS = 200


async def params(request: Request) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v[-1] for k, v in parse_qs(request.url.query,
                                                            max_num_fields=MAX_FORM_FIELDS).items()}
    raw = await request.body()
    if raw.strip():
        if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
            merged.update(_nest_form(parse_qs(raw.decode(errors="replace"), max_num_fields=MAX_FORM_FIELDS)))
        else:
            try:
                merged.update(parse_json_object(raw))
            except BadJson as bad:
                raise bad_request(str(bad)) from None
    return merged


def _nest_form(form: dict[str, list[str]]) -> dict[str, Any]:
    """`line_item[variant_id]=1` → {"line_item": {"variant_id": "1"}}. A key that is both a
    value and a nest (`order=x&order[email]=y`) is refused, as Rails refuses it (400)."""
    result: dict[str, Any] = {}
    for key, values in form.items():
        parts = key.replace("]", "").split("[")
        if len(parts) > MAX_JSON_DEPTH:
            raise bad_request(f"The request body nests deeper than {MAX_JSON_DEPTH} levels.")
        target = result
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise bad_request(f"The form field {part!r} is both a value and a nest.")
        if isinstance(target.get(parts[-1]), dict):
            raise bad_request(f"The form field {parts[-1]!r} is both a value and a nest.")
        target[parts[-1]] = values[-1]
    return result


def require(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name)
    if not isinstance(value, dict) or not value:
        raise missing_param(name)
    return value


def as_int(value: Any) -> Any:
    """Form and query values arrive as strings; numbers in JSON stay as they are (anything
    else is passed on as it came, for the owner's rule to refuse)."""
    if isinstance(value, str):
        number = ascii_int(value)
        return value if number is None else number
    return value


def collection(value: Any) -> list[dict]:
    """Nested attributes arrive as arrays or as Rails index hashes ({"0": {...}})."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        items = [value[k] for k in sorted(value, key=lambda k: (len(str(k)), str(k)))]
    else:
        return []
    return [item for item in items if isinstance(item, dict)]
