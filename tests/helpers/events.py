"""Small domain events used only by the platform tests."""
from __future__ import annotations

from shared.envelope import DomainEvent, upcaster


class Ticked(DomainEvent):
    event_type = "test.Ticked"
    n: int


class Exploded(DomainEvent):
    """Handlers in the tests raise when they see this one."""
    event_type = "test.Exploded"
    reason: str


class CustomerNamed(DomainEvent):
    """Version 1: one name field."""
    event_type = "test.CustomerNamed"
    event_version = 1
    name: str


class CustomerNamedV2(DomainEvent):
    """Version 2: the name split in two; stored v1 events are read through the upcaster."""
    event_type = "test.CustomerNamed"
    event_version = 2
    first_name: str
    last_name: str


@upcaster("test.CustomerNamed", 1)
def _split_name(payload: dict) -> dict:
    first, _, last = payload.pop("name").partition(" ")
    return {**payload, "first_name": first, "last_name": last}


class Answered(DomainEvent):
    """A test participant's answer to a request (tests/platform/test_trusted_steps.py)."""
    event_type = "test.Answered"
    request_id: str
    n: int


class Withdrawn(DomainEvent):
    """The request undone: a later call of it answers nothing."""
    event_type = "test.Withdrawn"
    request_id: str


class Awaited(DomainEvent):
    """The request a test participant now waits for: an answer to any other is ignored."""
    event_type = "test.Awaited"
    request_id: str
