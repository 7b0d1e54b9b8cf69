"""Issue 4's contention guarantee: 50 concurrent checkouts for a variant with 10 units."""
from __future__ import annotations

import asyncio

import pytest

from tests.helpers.solidus import full_flow, stock_of

# The same tests against both topologies (tests/conftest.py).
pytestmark = pytest.mark.both_topologies

SCARCE = 900


async def confirmed_orders(gateway, count: int, variant_id: int, at_once: int = 8) -> list[tuple]:
    """`count` orders in confirm, prepared a few at a time (the contention is at completion)."""
    gate = asyncio.Semaphore(at_once)

    async def one():
        async with gate:
            return await full_flow(gateway, card=None, variant_id=variant_id, coupon=None, complete=False)
    return await asyncio.gather(*(one() for _ in range(count)))


async def complete_together(gateway, orders: list[tuple]) -> list[tuple]:
    """Every order's `complete` at the same moment: they compete for the same stock."""
    responses = await asyncio.gather(*(gateway.put(f"/api/checkouts/{number}/complete",
                                                   headers=token) for number, token, _, _ in orders))
    return [(number, token, total, response) for (number, token, total, _), response in zip(orders, responses,
                                                                                            strict=True)]


async def test_50_checkouts_compete_for_10_units(gateway, system, stack):
    await system.acall("cart", "load_catalog", products=[
        {"id": 900, "name": "Scarce Sneaker", "slug": "scarce-sneaker",
         "variants": [{"id": SCARCE, "sku": "SCARCE-1", "name": "Scarce Sneaker", "prices": {"USD": "5.00"}}]}])
    await system.acall("shipping", "load_reference", stock_locations=[
        {"id": 1, "name": "Main Warehouse", "stock": [{"variant_id": SCARCE, "count_on_hand": 10}]}])

    results = await complete_together(gateway, await confirmed_orders(gateway, 50, SCARCE))
    statuses = [complete.status_code for *_, complete in results]
    completed = [c for *_, c in results if c.status_code == 200]
    refused = [c for *_, c in results if c.status_code == 422]
    assert len(completed) == 10, statuses
    assert len(refused) == 40, statuses
    assert all(c.json() == {"errors": ["Quantity is not available for items in your order"],
                            "type": "insufficient_stock"} for c in refused)
    assert all(c.json()["state"] == "complete" for c in completed)
    assert await stock_of(stack, SCARCE) == 0
    # The refused orders are back in confirm, unlocked: the customer can change them.
    number, token, _, _ = next(r for r in results if r[3].status_code == 422)
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "confirm" and order["completed_at"] is None


async def test_concurrent_checkouts_with_ample_stock_all_complete(gateway, stack):
    """No false `insufficient_stock` when many orders decrement one stock row at once."""
    before = await stock_of(stack, 3)
    results = await complete_together(gateway, await confirmed_orders(gateway, 24, 3))
    statuses = [complete.status_code for *_, complete in results]
    assert statuses == [200] * 24, [c.text for *_, c in results if c.status_code != 200][:3]
    assert await stock_of(stack, 3) == before - 24
