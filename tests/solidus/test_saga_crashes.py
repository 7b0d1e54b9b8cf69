"""Issue 4's guarantees against real processes: kill -9 at each step of a completion, and
replayed or duplicated events. Invariants are computed from the stores, independently of
the views: stock moved exactly once, at most one gateway charge per payment, at most one
OrderCompleted."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.helpers.completion import settled, waiting_on_step
from tests.helpers.orders import without_live_stock
from tests.helpers.processes import kill_9_every_instance, reconfigure, request_surviving_a_crash
from tests.helpers.solidus import ADDRESS, CARD, V1, stock_of

DECLINED = {**CARD, "number": "4000000000000002"}


async def to_confirm(gateway, card: dict) -> tuple[str, dict]:
    created = (await gateway.post("/api/orders", json={})).json()
    number, token = created["number"], {"X-Spree-Order-Token": created["token"]}
    await gateway.post(f"/api/checkouts/{number}/line_items", json={"line_item": {"variant_id": V1, "quantity": 1}},
                       headers=token)
    await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "email": "a@b.co", "bill_address_attributes": ADDRESS, "ship_address_attributes": ADDRESS}})
    await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    confirm = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "payments_attributes": [{"payment_method_id": 2, "source_attributes": card}]}})
    assert confirm.json()["state"] == "confirm", confirm.text
    return number, token


async def settle(gateway, number, token, timeout=90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        shown = await request_surviving_a_crash(lambda: gateway.get(f"/api/orders/{number}", headers=token))
        if shown is not None and shown.status_code == 200 and shown.json()["state"] in ("complete", "payment"):
            return shown.json()
        assert time.monotonic() < deadline, f"saga did not settle: {shown and shown.text}"
        await asyncio.sleep(0.2)


async def facts(stack, number: str) -> dict:
    conn = await asyncpg.connect(stack.database_url)
    try:
        count = lambda schema, type_: conn.fetchval(  # noqa: E731
            f'SELECT count(*) FROM "{schema}".events WHERE aggregate_id = $1 AND type = $2', number, type_)
        return {
            "completed": await count("order", "order.OrderCompleted"),
            "failed": await count("order", "order.CompletionFailed"),
            "allocated": await count("shipping", "shipping.StockAllocated"),
            "released": await count("shipping", "shipping.StockReleased"),
            "charges": await conn.fetchval("SELECT count(*) FROM payment.gateway_calls WHERE idempotency_key LIKE $1",
                                           f"{number}-%"),
            "authorized": await count("payment", "payment.PaymentAuthorized"),
        }
    finally:
        await conn.close()


@pytest.mark.parametrize("victim, point, card, outcome", [
    ("shipping", "shipping.after_allocation", CARD, "complete"),
    ("payment", "payment.after_gateway_call", CARD, "complete"),
    ("order", "saga.before_commit", CARD, "complete"),
    # The participant committed its answer; the saga's host dies before recording the reply:
    # the Kafka answer or the step called again (answering its first answer) moves it on.
    ("order", "saga.after_call", CARD, "complete"),
    ("payment", "payment.after_gateway_call", DECLINED, "payment"),
])
async def test_kill_9_mid_step_then_restart_ends_complete_or_compensated(gateway, system, stack, tmp_path,
                                                                         victim, point, card, outcome):
    await reconfigure(system, victim, TILLSTREAM_CRASH_AT=point, TILLSTREAM_CRASH_MARKER_DIR=str(tmp_path))
    number, token = await to_confirm(gateway, card)
    stock_before = await stock_of(stack, V1)
    pid_before = system.process_of(victim).pid

    response = await request_surviving_a_crash(lambda: gateway.put(f"/api/checkouts/{number}/complete",
                                                                   headers=token))
    assert response is None or response.status_code in (200, 202, 422), response.text
    order = await settle(gateway, number, token)

    assert (tmp_path / f"crashed-{point}").exists(), "the crash point was never reached"
    assert system.process_of(victim).pid != pid_before, "the process was not killed and restarted"
    assert order["state"] == outcome
    found = await facts(stack, number)
    assert found["allocated"] == 1 and found["charges"] == 1  # no double allocation, no double charge
    if outcome == "complete":
        assert found["completed"] == 1 and found["released"] == 0 and found["authorized"] == 1
        assert await stock_of(stack, V1) == stock_before - 1
        assert order["payments"][0]["state"] == "pending"
    else:
        assert found["completed"] == 0 and found["failed"] == 1 and found["released"] == 1
        assert await stock_of(stack, V1) == stock_before
        assert order["payments"][0]["state"] == "failed"


@pytest.mark.both_topologies
async def test_kill_9_of_the_saga_host_and_a_participant_during_12_concurrent_completions(gateway, system, stack,
                                                                                        faults):
    """Issue #25's crash case: 12 completions wait on their payments (one held inside the
    payment service's transaction) when every process running the saga and the payment
    service is killed (in one process, the one process). After the restart each completion
    resumes and completes: one authorised payment and one authorising gateway call per order,
    stock down by exactly the units completed, no compensation."""
    orders = [await to_confirm(gateway, CARD) for _ in range(12)]
    numbers = [number for number, _ in orders]
    stock_before = await stock_of(stack, V1)
    faults.arm("hold", "payment.process_payments")
    completions = [asyncio.create_task(request_surviving_a_crash(
        lambda number=number, token=token: gateway.put(f"/api/checkouts/{number}/complete", headers=token)))
        for number, token in orders]
    await waiting_on_step(stack, numbers, "process_payments")
    await kill_9_every_instance(system, "order", "payment")
    faults.disarm("hold", "payment.process_payments")
    for response in await asyncio.gather(*completions):
        assert response is None or response.status_code in (200, 202, 503), response.text

    for number, token in orders:
        await settled(stack, number, timeout=90)
        found = await facts(stack, number)
        assert found == {"completed": 1, "failed": 0, "allocated": 1, "released": 0, "charges": 1,
                         "authorized": 1}, (number, found)
        shown = await gateway.get(f"/api/orders/{number}", headers=token)
        assert shown.json()["state"] == "complete", shown.text
    assert await stock_of(stack, V1) == stock_before - len(orders)


async def test_replayed_and_duplicated_events_change_nothing(gateway, system, stack):
    number, token = await to_confirm(gateway, CARD)
    done = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert done.status_code == 200
    before = (await facts(stack, number), await stock_of(stack, V1),
              (await gateway.get(f"/api/orders/{number}", headers=token)).json())
    conn = await asyncpg.connect(stack.database_url)
    try:
        # Publish every event of this order again, from every service, through the outboxes.
        for schema in ("order", "shipping", "payment", "cart"):
            rows = await conn.fetch(
                f'INSERT INTO "{schema}".outbox (topic, key, value, headers)'
                f" SELECT '{schema}.events', aggregate_id, convert_to(json_build_object("
                " 'event_id', event_id, 'type', type, 'version', version, 'aggregate_type', aggregate_type,"
                " 'aggregate_id', aggregate_id, 'sequence', sequence, 'occurred_at', occurred_at,"
                " 'correlation_id', correlation_id, 'causation_id', causation_id, 'payload', payload)::text, 'UTF8'),"
                f" '[]' FROM \"{schema}\".events WHERE aggregate_id = $1 RETURNING id", number)
            assert rows
            await conn.execute("SELECT pg_notify($1, '')", f"{schema}_outbox")
        deadline = time.monotonic() + 30
        while await conn.fetchval("SELECT (SELECT count(*) FROM \"order\".outbox) + (SELECT count(*) FROM"
                                  " shipping.outbox) + (SELECT count(*) FROM payment.outbox)"
                                  " + (SELECT count(*) FROM cart.outbox)"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        # Every consumer group has seen the duplicates once they are all recorded as processed.
        await asyncio.sleep(2.0)
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM payment.processed_events p JOIN \"order\".events e ON e.event_id = p.event_id"
            " WHERE e.aggregate_id = $1", number)
        assert duplicates > 0
    finally:
        await conn.close()
    after = (await facts(stack, number), await stock_of(stack, V1),
             (await gateway.get(f"/api/orders/{number}", headers=token)).json())
    assert without_live_stock(after) == without_live_stock(before)

