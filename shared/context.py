"""Correlation and causation ids for the unit of work in progress.

An HTTP request sets them from `X-Request-Id`; a consumer sets them from the event it
handles, so every event it appends is caused by that event and shares its correlation.
"""
from __future__ import annotations

import contextvars
import uuid
from contextlib import contextmanager
from typing import Iterator

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
causation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("causation_id", default=None)


def new_id() -> str:
    return str(uuid.uuid4())


def current_correlation_id() -> str:
    value = correlation_id.get()
    if value is None:
        value = new_id()
        correlation_id.set(value)
    return value


@contextmanager
def caused_by(correlation: str, causation: str | None) -> Iterator[None]:
    c_token = correlation_id.set(correlation)
    k_token = causation_id.set(causation)
    try:
        yield
    finally:
        correlation_id.reset(c_token)
        causation_id.reset(k_token)
