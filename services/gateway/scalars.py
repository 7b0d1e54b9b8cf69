"""The bounded scalar field of both dialects' request models: text of at most `max_length`
characters, a number, a boolean or null; anything else "is invalid". What the value means
is judged further on; only the message for a text too long differs between the dialects."""
from __future__ import annotations

from typing import Annotated, Any, Callable

from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

MAX_TEXT = 255


def scalar_type(too_long: str) -> Callable[..., Any]:
    """`scalar(max_length, description)`, the annotation of a bounded scalar field, for a
    dialect whose message for a text past `max_length` is `too_long` (with `{max}`)."""
    def scalar(max_length: int = MAX_TEXT, description: str | None = None) -> Any:
        def check(value: Any) -> Any:
            if isinstance(value, str):
                if len(value) > max_length:
                    raise PydanticCustomError("too_long", too_long, {"max": max_length})
                return value
            if value is None or isinstance(value, (bool, int, float)):
                return value
            raise PydanticCustomError("invalid", "is invalid")
        schema: dict[str, Any] = {"anyOf": [{"type": "string", "maxLength": max_length}, {"type": "number"},
                                            {"type": "boolean"}, {"type": "null"}]}
        if description:
            schema["description"] = description
        return Annotated[Any, AfterValidator(check), WithJsonSchema(schema)]
    return scalar
