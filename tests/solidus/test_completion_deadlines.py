"""The completion saga's deadlines, failing calls and the operator's abort, against real
processes: whatever stops a step, everything the completion took is given back (stock,
coupon reservations, authorisations), counted in the stores."""
from __future__ import annotations

import asyncio
import json
import time

import asyncpg
import pytest

from tests.helpers.cli import cli
from tests.helpers.completion import given_back, settled
from tests.helpers.processes import kill_9, reconfigure, request_surviving_a_crash
from tests.helpers.solidus import CARD, V1, full_flow, stock_of


@pytest.fixture
async def limited_coupon(system):
    """A fresh coupon with one use, so a leaked reservation would show."""
    code = f"once{time.monotonic_ns() % 10**8}"
    await system.acall("cart", "load_promotions", promotions=[
        {"id": int(time.monotonic_ns() % 10**6) + 10_000, "name": code, "code": code, "kind": "order_flat",
         "value": "1.00", "usage_limit": 1}])
    return code



async def test_a_lost_answer_is_compensated_after_the_deadline_even_across_a_kill_9(gateway, system, stack,
                                                                                    limited_coupon):
    await reconfigure(system, "order", TILLSTREAM_DROP_AT="saga.answer.payment.PaymentsProcessed",
                      SAGA_PAYMENT_DEADLINE_MS="4000")
    try:
        stock_before = await stock_of(stack, V1)
        # Two completions lose the payment service's answer; during the second, the saga
        # worker is killed -9 while it waits: its deadline is a row, not a timer.
        for kill in (False, True):
            number, token, total, _ = await full_flow(gateway, card=CARD, coupon=limited_coupon, complete=False)
            completing = asyncio.ensure_future(request_surviving_a_crash(
                lambda number=number, token=token: gateway.put(f"/api/checkouts/{number}/complete", headers=token)))
            if kill:
                conn = await asyncpg.connect(stack.database_url)
                try:
                    while not await conn.fetchval("SELECT true FROM payment.events WHERE aggregate_id = $1"
                                                  " AND type = 'payment.PaymentsProcessed'", number):
                        await asyncio.sleep(0.05)
                finally:
                    await conn.close()
                await asyncio.sleep(0.5)  # the saga has taken the answer and dropped it
                await kill_9(system, "order")
            response = await completing
            await settled(stack, number, timeout=90)
            order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
            assert order["state"] == "payment" and order["completed_at"] is None
            if response is not None and response.status_code == 422:  # answered once settled (not 202)
                assert response.json()["errors"]["base"] == [
                    "The payment could not be processed in time. Please try again."]
            left = await given_back(stack, number)
            assert left["failure"]["code"] == "payment_timed_out" and left["failure"]["step"] == "process_payments"
            assert left["calls"] == [("authorize", True), ("void", True)]  # authorised, then voided
            assert [p["state"] for p in order["payments"]] == ["void"]
            assert left["reservations"] == 0 and not left["cart_still_locked"]
            assert order["adjustments"][0]["label"].endswith(f"({limited_coupon})")  # still on the cart
            assert await stock_of(stack, V1) == stock_before
    finally:
        await reconfigure(system, "order", TILLSTREAM_DROP_AT=None, SAGA_PAYMENT_DEADLINE_MS=None)
    # The coupon was given back each time: a new order can use it and complete.
    number, token, _, completed = await full_flow(gateway, card=CARD, coupon=limited_coupon)
    assert completed.status_code == 200 and completed.json()["state"] == "complete"


async def test_a_step_that_keeps_failing_is_compensated_at_once(gateway, system, stack, faults):
    faults.arm("fail", "payment.process_payments")
    try:
        stock_before = await stock_of(stack, V1)
        number, token, total, _ = await full_flow(gateway, card=CARD, complete=False)
        started = time.monotonic()
        response = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
        # Long before the step's 30 s deadline: SAGA_STEP_MAX_ATTEMPTS failed calls end it.
        assert time.monotonic() - started < 20
        assert response.status_code == 422, response.text
        assert response.json()["errors"]["base"][0].startswith("The process_payments step failed: ")
        assert "InjectedFault" in response.json()["errors"]["base"][0]
        await settled(stack, number)
        left = await given_back(stack, number)
        assert left["failure"]["code"] == "step_failed" and left["calls"] == []
        assert await stock_of(stack, V1) == stock_before and not left["cart_still_locked"]
    finally:
        faults.disarm("fail", "payment.process_payments")



async def test_an_operator_sees_and_aborts_a_stuck_completion(gateway, system, stack, faults):
    faults.arm("drop", "saga.answer.shipping.StockAllocated")
    try:
        stock_before = await stock_of(stack, V1)
        number, token, total, _ = await full_flow(gateway, card=CARD, complete=False)
        response = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
        assert response.status_code == 202  # stuck: the stock step's answer never arrives
        listed = json.loads((await asyncio.to_thread(cli, stack, "saga", "list", "--json")).stdout)
        [stuck] = [row for row in listed if row["order_number"] == number]
        assert stuck["status"] == "running" and stuck["step"] == "allocate_stock"
        assert await stock_of(stack, V1) == stock_before - 1  # allocated, but the saga never heard
        aborted = await asyncio.to_thread(cli, stack, "saga", "abort", number, "--yes", "--json")
        assert aborted.returncode == 0, aborted.stderr
        assert json.loads(aborted.stdout)[0]["status"] == "failed"
    finally:
        faults.disarm("drop", "saga.answer.shipping.StockAllocated")
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "confirm" and await stock_of(stack, V1) == stock_before
    left = await given_back(stack, number)
    assert left["failure"]["code"] == "aborted" and left["calls"] == [] and not left["cart_still_locked"]
    assert number not in [row["order_number"] for row in
                          json.loads((await asyncio.to_thread(cli, stack, "saga", "list", "--json")).stdout)]
    # The customer completes it after all.
    again = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert again.status_code == 200 and again.json()["state"] == "complete"
