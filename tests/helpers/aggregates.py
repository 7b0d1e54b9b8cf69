"""Given events → when a command → then events or a refusal: an aggregate's rules tried
without a database. Its state comes only from its events, rehydrated as the repository
(shared/aggregate.py) loads them, never from writing `version` or `pending`."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, Generic, TypeVar

import pytest

from shared.aggregate import Aggregate, DomainError
from shared.contracts.cart import VariantSnapshot
from shared.envelope import DomainEvent

A = TypeVar("A", bound=Aggregate)

# A variant for the carts of the unit tests.
TEE = VariantSnapshot(id=1, product_id=1, name="Tee", sku="T", price=Decimal("19.99"), track_inventory=True)


class History(Generic[A]):
    """One aggregate's stream, stored in memory."""

    def __init__(self, aggregate_cls: type[A], aggregate_id: str, events: list[DomainEvent]) -> None:
        self.aggregate_cls = aggregate_cls
        self.aggregate_id = aggregate_id
        self.events = list(events)
        self.result: Any = None  # what the last command returned

    def load(self) -> A:
        return self.aggregate_cls.rehydrate(self.aggregate_id, self.events)

    def when(self, command: Callable[[A], Any]) -> list[DomainEvent]:
        """Run `command` on the aggregate as loaded now and store its new events, as
        `Repository.execute` does; returns them (its return value is kept in `result`)."""
        aggregate = self.load()
        self.result = command(aggregate)
        self.events += aggregate.pending
        return list(aggregate.pending)

    def refuses(self, command: Callable[[A], Any]) -> DomainError:
        """`command` raises a DomainError, having recorded nothing."""
        aggregate = self.load()
        with pytest.raises(DomainError) as refused:
            command(aggregate)
        assert aggregate.pending == [], f"refused after recording {kinds(aggregate.pending)}"
        return refused.value


def given(aggregate_cls: type[A], aggregate_id: str, *events: DomainEvent) -> History[A]:
    return History(aggregate_cls, aggregate_id, list(events))


def kinds(events: list[DomainEvent]) -> list[type]:
    return [type(event) for event in events]
