"""shared/copying.py: what a Repository remembers and a saga runner keeps is copied so that no
change to the copy shows in the original, sharing only what cannot change in place."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from services.order.domain import Order
from shared.contracts.cart import VariantSnapshot
from shared.copying import state_copy
from shared.saga import SagaInstance
from tests.unit.test_completion_saga import allocated, answer, locked, started
from tests.unit.test_order import ready_to_leave_address


@dataclass
class Nested:
    items: list = field(default_factory=list)
    by_id: dict = field(default_factory=dict)
    tags: set = field(default_factory=set)


def test_a_copied_order_shares_nothing_that_changes_in_place():
    order: Order = ready_to_leave_address().load()
    copied = state_copy(order)
    assert copied is not order and type(copied) is Order and vars(copied) == vars(order)
    copied.pending.append("x")
    copied.state = "payment"
    assert order.pending == [] and order.state != "payment"


def test_a_copied_saga_instance_keeps_its_data_apart():
    saga, _ = started()
    answer(saga, locked())
    answer(saga, allocated())
    copied: SagaInstance = state_copy(saga)
    assert copied == saga and copied is not saga
    copied.data["lines"].append({"variant_id": 99})
    copied.invoked.append("more")
    assert {"variant_id": 99} not in saga.data["lines"] and "more" not in saga.invoked


def test_containers_are_copied_and_values_that_cannot_change_are_shared():
    snapshot = VariantSnapshot(id=1, product_id=1, name="Tee", sku="T", price=Decimal("1.00"), track_inventory=True)
    when, ident = datetime.now(timezone.utc), uuid.uuid4()
    original = Nested(items=[[1, 2], snapshot, (3, [4])], by_id={"a": {"b": [when]}}, tags={ident})
    copied = state_copy(original)
    assert copied == original
    copied.items[0].append(9)
    copied.items[2][1].append(9)
    copied.by_id["a"]["b"].append(ident)
    copied.tags.add("new")
    assert original == Nested(items=[[1, 2], snapshot, (3, [4])], by_id={"a": {"b": [when]}}, tags={ident})
    assert copied.items[1] is snapshot  # a frozen model: shared, never copied
