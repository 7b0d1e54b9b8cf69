"""Issue #23, 7: an order placed with nothing paid nor authorised (a Solidus check, GetCandy's
offline payment) holds its stock only UNPAID_ORDER_RELEASE_AFTER_S: then the system cancels
it as an admin would (order.OrderCanceled, reason "unpaid"), and its stock goes back. The
deadline is a row, so it survives a kill -9; an order a gateway authorised is left alone.
Over real HTTP, against the running system. The test reads the deadline the system set, then
brings it forward instead of sleeping through it: the sweep, not the clock, is under test there."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.helpers.getcandy import V_ID, placed_ready_order
from tests.helpers.processes import kill_9, reconfigure_every_instance
from tests.helpers.solidus import ADMIN, CARD, V1, full_flow, stock_of

# Apart, two order-service instances sweep the same rows.
pytestmark = [pytest.mark.both_topologies, pytest.mark.usefixtures("getcandy_data")]

RELEASE_AFTER_S = 600


async def releases(stack) -> dict[str, float]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        return {r["number"]: r["due_in"] for r in await conn.fetch(
            'SELECT number, extract(epoch FROM release_at - now())::float AS due_in'
            ' FROM "order".unpaid_order_releases')}
    finally:
        await conn.close()


async def bring_forward(stack, numbers: list[str]) -> None:
    """As if their time had passed."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute('UPDATE "order".unpaid_order_releases SET release_at = now() WHERE number = ANY($1)',
                           numbers)
    finally:
        await conn.close()


async def canceled_as_unpaid(stack) -> list[str]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        return [r["aggregate_id"] for r in await conn.fetch(
            """SELECT aggregate_id FROM "order".events WHERE type = 'order.OrderCanceled'"""
            " AND payload->>'reason' = 'unpaid'")]
    finally:
        await conn.close()


async def eventually(check, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "not released in time"
        await asyncio.sleep(0.2)


async def test_unpaid_check_and_offline_orders_release_their_stock_after_their_time(gateway, system, stack):
    await reconfigure_every_instance(system, "order", UNPAID_ORDER_RELEASE_AFTER_S=str(RELEASE_AFTER_S),
                      UNPAID_ORDER_SWEEP_INTERVAL_S="0.2")
    try:
        tee_before, candy_before = await stock_of(stack, V1), await stock_of(stack, V_ID)
        earlier = set(await releases(stack))
        check, check_token, _, placed = await full_flow(gateway, card=None)
        assert placed.status_code == 200 and placed.json()["payment_state"] == "balance_due"
        received, _, _, _ = await full_flow(gateway, card=None)  # the check arrives: an admin captures it
        payment = (await gateway.get(f"/api/orders/{received}", headers=ADMIN)).json()["payments"][0]["id"]
        captured = await gateway.put(f"/api/orders/{received}/payments/{payment}/capture", headers=ADMIN)
        assert captured.status_code == 200 and captured.json()["state"] == "completed", captured.text
        card, card_token, _, carded = await full_flow(gateway, card=CARD)
        assert carded.status_code == 200 and carded.json()["state"] == "complete"
        offline = await placed_ready_order(gateway, quantity=1)
        processed = await gateway.post("/api/v1/orders/process", json={"order_id": offline, "payment_token": "x"})
        assert processed.status_code == 200 and processed.json()["data"]["status"] == "payment-processing"

        due = {number: due_in for number, due_in in (await releases(stack)).items() if number not in earlier}
        assert check in due and received in due and card not in due
        assert len(due) == 3  # the offline order's too
        assert all(RELEASE_AFTER_S - 120 < due_in <= RELEASE_AFTER_S for due_in in due.values()), due
        assert await stock_of(stack, V1) == tee_before - 3 and await stock_of(stack, V_ID) == candy_before - 1
        await kill_9(system, "order")  # the deadlines are rows, not timers
        await bring_forward(stack, list(due))

        async def released() -> bool:
            order = (await gateway.get(f"/api/orders/{check}", headers=ADMIN)).json()
            candy = (await gateway.get(f"/api/v1/orders/{offline}")).json()["data"]
            return order["state"] == "canceled" and candy["status"] == "expired"
        await eventually(released)
        await eventually(lambda: _stock_is(stack, {V1: tee_before - 2, V_ID: candy_before}))
        canceled = await canceled_as_unpaid(stack)
        assert canceled.count(check) == 1 and card not in canceled and received not in canceled
        for kept in (card, received):
            assert (await gateway.get(f"/api/orders/{kept}", headers=ADMIN)).json()["state"] == "complete"
        assert (await gateway.get(f"/api/orders/{received}", headers=ADMIN)).json()["payment_state"] == "paid"
        assert check not in await releases(stack)
    finally:
        await reconfigure_every_instance(system, "order", UNPAID_ORDER_RELEASE_AFTER_S=None,
                                         UNPAID_ORDER_SWEEP_INTERVAL_S=None)


async def _stock_is(stack, expected: dict[int, int]) -> bool:
    return all([await stock_of(stack, variant) == count for variant, count in expected.items()])
