"""Small domain events used only by the platform tests."""
from __future__ import annotations

from shared.envelope import DomainEvent


class Ticked(DomainEvent):
    event_type = "test.Ticked"
    n: int


class Exploded(DomainEvent):
    """Handlers in the tests raise when they see this one."""
    event_type = "test.Exploded"
    reason: str
