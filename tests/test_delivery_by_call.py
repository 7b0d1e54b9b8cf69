"""Issue #26 (plan S3.2): leaving `address` the order calls `ShippingService.build_shipments`
and applies the answer itself, so no request waits for the broker: with shipping's Kafka
consumer of the order's events held still, `next` still delivers; in one process neither `next`
nor `complete` listens for the order view. A crash between the DeliveryRequested and the call
leaves the order awaiting its delivery: the next `next` calls again and delivers."""
from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from tests.helpers.metrics import consumed, counted
from tests.helpers.processes import reconfigure, request_surviving_a_crash
from tests.helpers.solidus import ADDRESS, CARD, full_flow

SHIPPING_CONSUMER = "consumer.shipping.orders"  # shipping's subscription to order.events
CRASH = "order.after_delivery_requested"


def view_waits(system) -> float:
    """How many times the order view was waited for by LISTEN/NOTIFY in the system's process."""
    return counted(system, "tillstream_order_view_waits_total")


async def to_address(gateway) -> tuple[str, dict]:
    created = (await gateway.post("/api/orders", json={})).json()
    number, token = created["number"], {"X-Spree-Order-Token": created["token"]}
    added = await gateway.post(f"/api/checkouts/{number}/line_items",
                               json={"line_item": {"variant_id": 1, "quantity": 1}}, headers=token)
    assert added.status_code == 201, added.text
    assert (await gateway.put(f"/api/checkouts/{number}/next", headers=token)).json()["state"] == "address"
    return number, token


def leave_address(gateway, number: str, token: dict):
    return gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "email": "ada@example.com", "bill_address_attributes": ADDRESS, "ship_address_attributes": ADDRESS}})


@pytest.mark.both_topologies
async def test_next_delivers_by_call_while_shippings_consumer_is_held(gateway, system, faults):
    number, token = await to_address(gateway)
    faults.arm("hold", SHIPPING_CONSUMER)
    delivered = await leave_address(gateway, number, token)
    assert delivered.status_code == 200, delivered.text
    assert delivered.json()["state"] == "delivery" and delivered.json()["shipments"], delivered.text
    shown = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert shown["state"] == "delivery" and shown["shipments"] == delivered.json()["shipments"]


@pytest.mark.both_topologies
async def test_a_failed_delivery_call_is_answered_from_kafka(gateway, system, faults):
    number, token = await to_address(gateway)
    faults.arm("fail", "shipping.build_shipments")
    faults.arm("hold", SHIPPING_CONSUMER)
    stale = await leave_address(gateway, number, token)  # neither the call nor Kafka answers in time
    assert stale.status_code == 200 and stale.json()["state"] == "address", stale.text
    faults.disarm("hold", SHIPPING_CONSUMER)
    deadline = time.monotonic() + 30
    while (shown := (await gateway.get(f"/api/orders/{number}", headers=token)).json())["state"] != "delivery":
        assert time.monotonic() < deadline, shown
        await asyncio.sleep(0.1)
    assert shown["shipments"], shown  # answered from Kafka while the call still fails


async def test_in_one_process_next_and_complete_listen_for_no_view(gateway, system):
    before = view_waits(system)
    _, _, _, completed = await full_flow(gateway, card=CARD)
    assert completed is not None and completed.status_code == 200, completed and completed.text
    assert completed.json()["state"] == "complete"
    assert view_waits(system) == before


async def test_a_crash_before_the_delivery_call_is_delivered_by_the_next_next(gateway, system, faults, tmp_path):
    await reconfigure(system, "order", TILLSTREAM_CRASH_AT=CRASH, TILLSTREAM_CRASH_MARKER_DIR=str(tmp_path))
    number, token = await to_address(gateway)
    faults.arm("hold", SHIPPING_CONSUMER)  # nor answered from Kafka: only a call delivers
    pid = system.process_of("order").pid
    cut = await request_surviving_a_crash(lambda: leave_address(gateway, number, token))
    assert cut is None or cut.status_code >= 500, cut.text
    assert (tmp_path / f"crashed-{CRASH}").exists(), "the crash point was never reached"
    await restarted(system, "order", pid)
    shown = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert shown["state"] == "address" and not shown["shipments"], shown
    again = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    assert again.status_code == 200, again.text
    assert again.json()["state"] == "delivery" and again.json()["shipments"], again.text


async def restarted(system, service: str, old_pid: int) -> None:
    process = system.process_of(service)
    deadline = time.monotonic() + 60
    while process.pid == old_pid or not process.alive():
        assert time.monotonic() < deadline, f"{service} was not restarted"
        await asyncio.sleep(0.1)
    await asyncio.to_thread(system.wait_ready, 90, (process.name,))


def passed_over(system, consumer: str) -> float:
    return consumed(system, consumer, "applied_inline")


async def test_in_one_process_shippings_consumer_passes_over_a_request_answered_by_call(gateway, system, stack,
                                                                                      faults):
    """The DeliveryRequested that reaches shipping from Kafka after the call answered it costs no
    transaction: no idempotency record is written for it, the message is counted as passed over."""
    before = passed_over(system, "shipping.orders")
    number, token = await to_address(gateway)
    faults.arm("hold", SHIPPING_CONSUMER)  # so the message surely comes after the call
    delivered = await leave_address(gateway, number, token)
    assert delivered.json()["state"] == "delivery", delivered.text
    faults.disarm("hold", SHIPPING_CONSUMER)
    deadline = time.monotonic() + 30
    while passed_over(system, "shipping.orders") == before:
        assert time.monotonic() < deadline, "shipping's consumer never passed over the answered request"
        await asyncio.sleep(0.1)
    conn = await asyncpg.connect(stack.database_url)
    try:
        request = await conn.fetchval("""SELECT event_id FROM "order".events WHERE aggregate_id = $1"""
                                      " AND type = 'order.DeliveryRequested'", number)
        assert request is not None
        assert not await conn.fetchval("""SELECT count(*) FROM "shipping".processed_events"""
                                       " WHERE consumer = 'shipping.orders' AND event_id = $1", request)
    finally:
        await conn.close()


async def test_in_one_process_the_saga_records_its_participants_answers_in_one_statement(gateway, system):
    """Issue #26: the completion's drive records each call's answer in one statement on the
    saga's row as it knew it (`record_saga_answer`); only the pivot, which runs on the Order,
    takes a transaction, also on the row as the drive knew it (no read of it)."""
    before = {how: counted(system, "tillstream_saga_answers_recorded_total", saga="completion", how=how)
              for how in ("one_statement", "local_at_version", "transaction")}
    _, _, _, completed = await full_flow(gateway, card=CARD)
    assert completed is not None and completed.json()["state"] == "complete", completed and completed.text
    after = {how: counted(system, "tillstream_saga_answers_recorded_total", saga="completion", how=how)
             for how in before}
    # Cart locked and stock allocated in one statement each; the payment's answer leads to the pivot.
    assert after["one_statement"] - before["one_statement"] == 2
    assert after["local_at_version"] - before["local_at_version"] == 1
    assert after["transaction"] - before["transaction"] == 0
