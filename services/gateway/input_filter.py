"""One filter for the text of every public request, before it is routed, authorised or
admitted: the path, the query string and the body (JSON or form) may hold no control
character and no unpaired surrogate (shared/validation.py's FORBIDDEN_CHARACTERS), and the
query string and a form body at most MAX_FIELDS fields each. Otherwise 400 in the dialect's
error body.

Why here and not in each route: NUL or a lone surrogate anywhere reached PostgreSQL or
asyncpg and came back a 500, and a long query string was parsed whole by whichever route
read it first (Starlette's parser has no bound), before anything asked who was calling.

The body has been read by the body guard (shared/http_limits.py), which runs first.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qsl

from services.gateway.admission import error_body
from shared.http_limits import answer
from shared.validation import FORBIDDEN_CHARACTERS, MAX_JSON_DEPTH, has_forbidden_text, json_depth

MAX_FIELDS = 200
_FORBIDDEN = "The request holds a control character or an unpaired surrogate in its {}."
_TOO_MANY = "The request's {} has more than " + str(MAX_FIELDS) + " fields."


class InputFilter:
    def __init__(self, app, *, prefix: str = "/api") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        received = []
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        refusal = refusal_of(scope, b"".join(m.get("body", b"") for m in received))
        if refusal is not None:
            await answer(send, error_body(scope["path"], 400, refusal), 400)
            return

        async def replay():
            return received.pop(0) if received else await receive()

        await self.app(scope, replay, send)


def refusal_of(scope, body: bytes) -> str | None:
    """Why the request is refused, or None."""
    if not FORBIDDEN_CHARACTERS.isdisjoint(scope["path"]):
        return _FORBIDDEN.format("path")
    refusal = _form_refusal(scope["query_string"].decode("latin-1"), "query string")
    if refusal is not None or not body.strip():
        return refusal
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    if b"application/x-www-form-urlencoded" in content_type:
        return _form_refusal(body.decode(errors="replace"), "form body")
    return _json_refusal(body)


def _form_refusal(encoded: str, where: str) -> str | None:
    """Decoded as the dialects decode it (invalid UTF-8 becomes U+FFFD, never a surrogate)."""
    if not encoded:
        return None
    try:
        fields = parse_qsl(encoded, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        return _TOO_MANY.format(where)
    return _FORBIDDEN.format(where) if has_forbidden_text([text for field in fields for text in field]) else None


def _json_refusal(body: bytes) -> str | None:
    """Raw control characters are not JSON (the dialect's parser refuses them, 400) and UTF-8
    cannot carry a surrogate: only a `\\u` escape can bring either into a decoded string."""
    if b"\\u" not in body or json_depth(body) > MAX_JSON_DEPTH:
        return None  # nothing to find, or the dialect refuses it for its depth
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError):
        return None  # the dialect's parser answers it
    return _FORBIDDEN.format("body") if has_forbidden_text(decoded) else None
