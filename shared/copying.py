"""Copies of the states a process keeps for later commands: aggregates a Repository remembers
(shared/aggregate.py) and saga instances (shared/saga_runner.py). A command changes what it is
given, so what is kept is never handed out itself.

`copy.deepcopy` copies every object it meets, frozen events and Decimals included, and was
about a tenth of the one process's CPU in a checkout. Here what can change in place is copied
(lists, dicts, sets, objects with a `__dict__`) and what cannot is shared: numbers, strings,
Decimals, UUIDs, times, enums, and frozen pydantic models (events and their parts: their fields
are not reassigned, and the domain never mutates a list it received in an event).
"""
from __future__ import annotations

import copy
import enum
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

T = TypeVar("T")

_SHARED = frozenset({type(None), bool, int, float, complex, str, bytes, Decimal, uuid.UUID, datetime, date, time,
                     timedelta, frozenset, range, type})


def state_copy(value: T) -> T:
    """A copy of `value` that shares nothing a change to one could be seen through in the other."""
    return _copied(value)


def _copied(value: Any) -> Any:
    cls = type(value)
    if cls in _SHARED:
        return value
    if cls is list:
        return [_copied(item) for item in value]
    if cls is dict:
        return {key: _copied(item) for key, item in value.items()}
    if cls is tuple:
        return tuple(_copied(item) for item in value)
    if cls is set:
        return set(value)  # members are hashable: shared
    if isinstance(value, enum.Enum):
        return value
    if isinstance(value, BaseModel):
        return value if value.model_config.get("frozen") else copy.deepcopy(value)
    if (hasattr(value, "__dict__") and not hasattr(cls, "__slots__") and not hasattr(cls, "__deepcopy__")
            and cls.__reduce_ex__ is object.__reduce_ex__):
        clone = object.__new__(cls)
        clone.__dict__.update({name: _copied(item) for name, item in value.__dict__.items()})
        return clone
    return copy.deepcopy(value)
