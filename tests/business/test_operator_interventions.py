"""Issue #23, 7: what would otherwise wait for ever, an operator ends, against the running
system (real processes, broker, PostgreSQL) with the `tillstream` CLI as a process: an
outbox row the broker refuses holds back its order's later events until it is retried or
discarded, and a completion whose compensation is never answered is force-failed."""
from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest

from shared.envelope import EventEnvelope
from tests.helpers.cli import cli
from tests.helpers.completion import given_back, settled
from tests.helpers.kafka import read_topic
from tests.helpers.solidus import CARD, V1, full_flow, stock_of

pytestmark = pytest.mark.both_topologies  # apart: two relays contend for the outbox, two saga sweepers


async def published_of(stack, number: str, settle: float = 1.0) -> list[str]:
    """The event ids on order.events keyed by `number`, in their order."""
    records = await read_topic(stack.settings(), "order.events", until_count=0, settle=settle)
    return [str(EventEnvelope.from_json(r.value).event_id) for r in records if r.key == number.encode()]



async def until_parked(conn, row_id: int, timeout: float = 30) -> None:
    """Until the relay has parked the outbox row (the broker refused it)."""
    deadline = time.monotonic() + timeout
    while not await conn.fetchval('SELECT parked_at IS NOT NULL FROM "order".outbox WHERE id = $1', row_id):
        assert time.monotonic() < deadline, f"outbox row {row_id} was not parked within {timeout} s"
        await asyncio.sleep(0.05)

async def test_a_parked_event_holds_back_its_order_until_an_operator_discards_it(gateway, guest_order, stack):
    number, token = guest_order
    assert (await gateway.post(f"/api/checkouts/{number}/line_items", headers=token,
                               json={"line_item": {"variant_id": V1, "quantity": 1}})).status_code == 201
    conn = await asyncpg.connect(stack.database_url)
    try:
        last = await conn.fetchval('SELECT max(position) FROM "order".events WHERE aggregate_id = $1', number)
        # An event too large for the broker (as a bug or an older version might have written).
        parked = await conn.fetchval(
            """INSERT INTO "order".outbox (topic, key, value, headers) VALUES ('order.events', $1, $2, '[]')"""
            " RETURNING id", number, b"x" * (2 * 1024 * 1024))
        await until_parked(conn, parked)
        advanced = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
        assert advanced.status_code == 200 and advanced.json()["state"] == "address"
        held = [str(r["event_id"]) for r in await conn.fetch(
            'SELECT event_id FROM "order".events WHERE aggregate_id = $1 AND position > $2 ORDER BY position',
            number, last)]
        assert held
        before = await published_of(stack, number)
        assert before and not set(held) & set(before)  # the earlier ones went out, the later ones wait
        other, _ = (await gateway.post("/api/orders", json={})).json()["number"], None
        assert await published_of(stack, other)  # other orders flow

        status = json.loads(cli(stack, "outbox", "status", "--json").stdout)["order"]
        assert status["held"] >= len(held) and parked in [row["id"] for row in status["parked_rows"]]
        asked = cli(stack, "outbox", "discard", "--service", "order", "--id", str(parked), check=False)
        assert asked.returncode == 2 and "--yes" in asked.stderr  # no answer to "are you sure?": nothing done
        assert await conn.fetchval('SELECT parked_at IS NOT NULL FROM "order".outbox WHERE id = $1', parked)
        cli(stack, "outbox", "retry", "--service", "order", "--id", str(parked))  # refused again: parked again
        await until_parked(conn, parked)
        assert not set(held) & set(await published_of(stack, number))

        discarded = json.loads(cli(stack, "outbox", "discard", "--service", "order", "--id", str(parked), "--yes",
                                   "--json").stdout)
        assert discarded == {"service": "order", "discarded": [parked]}
        assert await published_of(stack, number) == before + held  # in order, none missing
    finally:
        await conn.close()


async def test_an_operator_force_fails_a_completion_whose_compensation_is_never_answered(gateway, system, stack,
                                                                                          faults):
    faults.arm("drop", "saga.answer.shipping.StockAllocated")
    faults.arm("drop", "saga.answer.shipping.StockReleased")
    try:
        stock_before = await stock_of(stack, V1)
        number, token, _, _ = await full_flow(gateway, card=CARD, complete=False)
        assert (await gateway.put(f"/api/checkouts/{number}/complete", headers=token)).status_code == 202
        aborted = cli(stack, "saga", "abort", number, "--wait", "3", "--yes", "--json")
        assert json.loads(aborted.stdout)[0]["status"] == "compensating"  # the release's answer never comes
        forced = cli(stack, "saga", "abort", number, "--force", "--wait", "1", "--yes", "--json")
        assert [row["status"] for row in json.loads(forced.stdout)] == ["failed"]
    finally:
        faults.disarm("drop", "saga.answer.shipping.StockAllocated")
        faults.disarm("drop", "saga.answer.shipping.StockReleased")
    await settled(stack, number)
    [ended] = [row for row in json.loads(cli(stack, "saga", "list", "--all", "--json").stdout)
               if row["order_number"] == number]
    assert ended["status"] == "failed" and ended["force_requested"]
    assert ended["failure"]["code"] == "aborted" and ended["failure"]["unanswered"] == ["allocate_stock"]
    assert "compensations left unanswered: allocate_stock" in cli(stack, "saga", "list", "--all").stdout
    left = await given_back(stack, number)
    assert left["failure"]["unanswered_compensations"] == ["allocate_stock"] and not left["cart_still_locked"]
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "confirm" and order["completed_at"] is None
    # The shipping service did put the stock back; only its answer was lost. The order is
    # free again: the customer completes it.
    assert await stock_of(stack, V1) == stock_before
    again = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert again.status_code == 200 and again.json()["state"] == "complete"
