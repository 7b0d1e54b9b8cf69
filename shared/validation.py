"""Checks on untrusted input that take linear time whatever they are given.

No regular expression here or on any request field: the email check that froze the order
service (`^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$`, quadratic on `a@` and 50,000 dots) is now a
single pass, and every check bounds the length before looking at the content.
"""
from __future__ import annotations

import json
from typing import Any

MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path
MAX_JSON_DEPTH = 32
# Every request body, public or internal (services/gateway/admission.py, shared/internal.py).
MAX_BODY_BYTES = 1024 * 1024
INT32_MAX = 2**31 - 1


def valid_email(value: object) -> bool:
    """One `@`, something before it, and a domain with a dot inside it; no whitespace.
    (What the old expression accepted, in one pass.)"""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_EMAIL_LENGTH:
        return False
    if any(ch.isspace() for ch in value) or value.count("@") != 1:
        return False
    local, _, domain = value.partition("@")
    return bool(local) and "." in domain[1:-1]


def ascii_int(value: object, *, digits: int = 10) -> int | None:
    """An int from an int, or from a string of at most `digits` ASCII digits (an optional
    leading minus). `str.isdigit` is not enough: "²" is a digit to it, and int("²") fails."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    text = value.strip()
    body = text[1:] if text.startswith("-") else text
    if not body or len(body) > digits or not all("0" <= ch <= "9" for ch in body):
        return None
    return int(text)


def json_depth(raw: bytes | str, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep a JSON document nests (stopping past `limit`), in one pass over its bytes,
    before any parser recurses into it."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


class BadJson(ValueError):
    """A body that is not a JSON object within the depth limit."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's parser would read NaN and Infinity


def parse_json_object(raw: bytes, limit: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    if json_depth(raw, limit) > limit:
        raise BadJson(f"The request body nests deeper than {limit} levels.")
    try:
        body = json.loads(raw, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise BadJson("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise BadJson("The request body must be a JSON object.")
    return body


# Text no field of ours holds: C0 controls but tab, line feed and carriage return; DEL; and
# UTF-16 surrogates, which in a Python string are always unpaired (a JSON escape pair such as
# "\ud83d\ude00" decodes to one character). PostgreSQL refuses NUL in text and asyncpg cannot
# encode a surrogate: they were 500s.
FORBIDDEN_CHARACTERS = frozenset(map(chr, [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F,
                                           *range(0xD800, 0xE000)]))


def has_forbidden_text(value: Any) -> bool:
    """Whether any string in `value` (a decoded JSON or form value: dicts, lists, strings),
    keys included, holds a forbidden character. One pass, with no recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not FORBIDDEN_CHARACTERS.isdisjoint(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False
