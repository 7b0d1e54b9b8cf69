"""Completion v2 against the real stack: changes racing `complete`/`process`, a single-use
coupon raced by two orders through both dialects, and placed orders that refuse every
change. What is charged and shipped is read from the stores, independently of the views."""
from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal

import asyncpg
import pytest

from services.gateway.getcandy.ids import BASKETS, ORDERS
from services.order.view import read_order
from shared.db import _init_connection
from tests.getcandy.test_lifecycle import UK, V, getcandy_data, placed_ready_order  # noqa: F401 (autouse data)
from tests.helpers.orders import without_live_stock
from tests.solidus.conftest import ADMIN, V1
from tests.solidus.test_checkout import ADDRESS
from tests.solidus.test_complete import full_flow

MUG = 3  # a second demo variant, ample stock
RACES = 50


def getcandy_number(order_id: str) -> str:
    return f"R{ORDERS.decode(order_id)[0]:09d}"


async def settled(stack, number: str, timeout: float = 60) -> None:
    """Every completion of the order has ended (its compensations answered, if it failed)."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while await conn.fetchval("SELECT count(*) FROM \"order\".sagas WHERE key = $1 AND ended_at IS NULL", number):
            assert asyncio.get_running_loop().time() < deadline, f"the completion of {number} did not end"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def placed_facts(stack, number: str) -> dict:
    """What the stores say of an order: its view, what its completion allocated (net of
    releases) and whether it completed."""
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": "order"})
    await _init_connection(conn)
    try:
        order = await read_order(conn, number)
        completion = await conn.fetchval(
            "SELECT payload->>'request_id' FROM \"order\".events WHERE aggregate_id = $1"
            " AND type = 'order.OrderCompleted'", number)
        allocated = await conn.fetch(
            "SELECT payload FROM shipping.events WHERE aggregate_id = $1 AND type = 'shipping.StockAllocated'"
            " AND payload->>'request_id' = $2", number, completion)
        released = await conn.fetchval(
            "SELECT count(*) FROM shipping.events WHERE aggregate_id = $1 AND type = 'shipping.StockReleased'"
            " AND payload->>'request_id' = $2", number, completion)
    finally:
        await conn.close()
    units: Counter = Counter()
    for row in allocated:
        for unit in row["payload"]["units"]:
            units[unit["variant_id"]] += unit["quantity"]
    return {"order": order, "completed": completion is not None, "allocated": units, "released": released}


async def assert_charged_equals_shipped(stack, number: str) -> dict:
    facts = await placed_facts(stack, number)
    order = facts["order"]
    paid = sum((Decimal(p["amount"]) for p in order["payments"] if p["state"] not in ("failed", "invalid", "void")),
               Decimal(0))
    assert paid == order["total"], f"{number}: payments {paid} for a total of {order['total']}"
    lines = Counter()
    for line in order["line_items"]:
        lines[line["variant_id"]] += line["quantity"]
    assert facts["allocated"] == lines and facts["released"] == 0, (
        f"{number}: shipped {facts['allocated']}, charged {lines}")
    return facts


async def after(delay: float, request):
    """`request()` after `delay` seconds (a race's jitter: positive delays `complete`, negative the change)."""
    await asyncio.sleep(delay)
    return await request()


# -- Solidus: complete racing a change -------------------------------------------------------
async def solidus_race(gateway, stack, kind: str, jitter: float) -> str:
    number, token, total, _ = await full_flow(gateway, card=None, coupon=None, complete=False)
    line = (await gateway.get(f"/api/orders/{number}", headers=token)).json()["line_items"][0]
    change = {
        "add": lambda: gateway.post(f"/api/checkouts/{number}/line_items", headers=token,
                                    json={"line_item": {"variant_id": MUG, "quantity": 1}}),
        "quantity": lambda: gateway.patch(f"/api/checkouts/{number}/line_items/{line['id']}", headers=token,
                                          json={"line_item": {"quantity": 3}}),
        "coupon": lambda: gateway.post(f"/api/orders/{number}/coupon_codes", headers=token,
                                       json={"coupon_code": "10off"}),
    }[kind]
    complete = lambda: gateway.put(f"/api/checkouts/{number}/complete", headers=token)  # noqa: E731
    completed, changed = await asyncio.gather(after(max(jitter, 0), complete), after(max(-jitter, 0), change))
    assert completed.status_code in (200, 202, 422), completed.text
    await settled(stack, number)
    facts = await placed_facts(stack, number)
    change_won = changed.status_code < 300
    assert change_won != facts["completed"], (
        f"{kind} race on {number}: change {changed.status_code}, complete {completed.status_code}, "
        f"completed={facts['completed']}")
    if facts["completed"]:
        # The change lost: refused as Solidus does (the order lock while completing; a placed
        # order is not the guest's to update any more).
        assert (changed.status_code, changed.text) == (409, f"Could not obtain lock on order {number}") or (
            changed.status_code == 401 and changed.json() == {"error": "You are not authorized to perform that action."}
        ), changed.text
        await assert_charged_equals_shipped(stack, number)
    else:
        assert completed.status_code == 422 and completed.json()["error"], completed.text
    return "complete" if facts["completed"] else kind


@pytest.mark.parametrize("kind", ["add", "quantity", "coupon"])
async def test_complete_racing_a_change_never_ships_or_charges_what_the_other_did_not(gateway, stack, kind):
    rng = random.Random(f"race-{kind}")
    slots = asyncio.Semaphore(10)

    async def one(jitter: float) -> str:
        async with slots:
            return await solidus_race(gateway, stack, kind, jitter)
    outcomes = Counter(await asyncio.gather(*(one(rng.uniform(-0.4, 0.03)) for _ in range(RACES))))
    assert sum(outcomes.values()) == RACES
    print(f"{kind}: {dict(outcomes)}")


# -- GetCandy: process racing a basket change -------------------------------------------------
async def getcandy_race(gateway, stack, kind: str, jitter: float) -> str:
    order_id = await placed_ready_order(gateway, quantity=1)
    number = getcandy_number(order_id)
    basket_id = (await gateway.get(f"/api/v1/orders/{order_id}")).json()["data"]  # the order itself
    del basket_id
    basket = BASKETS.encode(int(number[1:]))
    change = {
        "add": lambda: gateway.post("/api/v1/basket-lines", json={"basket_id": basket,
                                                                  "variants": [{"id": V, "quantity": 1}]}),
        "coupon": lambda: gateway.put(f"/api/v1/baskets/{basket}/discounts", json={"coupon": "ten"}),
    }[kind]
    process = lambda: gateway.post("/api/v1/orders/process", json={"order_id": order_id, "payment_token": "x"})  # noqa
    processed, changed = await asyncio.gather(after(max(jitter, 0), process), after(max(-jitter, 0), change))
    assert processed.status_code in (200, 202, 403, 409, 422), processed.text
    await settled(stack, number)
    facts = await placed_facts(stack, number)
    if changed.status_code >= 300:  # the change lost, and was told so in GetCandy's shape
        assert changed.status_code in (403, 409) and changed.json()["error"]["message"], changed.text
    if not facts["completed"]:
        assert processed.status_code >= 400 and processed.json()["error"]["message"], processed.text
        return kind
    # `process` reads the order, enters the payment and completes in one request: a change
    # that came before it read the order is simply part of what it placed, and charged.
    order = (await assert_charged_equals_shipped(stack, number))["order"]
    reflected = (any(a["code"] == "ten" for a in order["adjustments"]) if kind == "coupon"
                 else sum(line["quantity"] for line in order["line_items"]) == 2)
    assert reflected == (changed.status_code < 300), (kind, changed.text, order)
    return "complete" if changed.status_code >= 300 else f"complete with the {kind}"


@pytest.mark.parametrize("kind", ["add", "coupon"])
async def test_process_racing_a_basket_change(gateway, stack, kind):
    rng = random.Random(f"getcandy-{kind}")
    slots = asyncio.Semaphore(10)

    async def one(jitter: float) -> str:
        async with slots:
            return await getcandy_race(gateway, stack, kind, jitter)
    outcomes = Counter(await asyncio.gather(*(one(rng.uniform(-1.2, 0.02)) for _ in range(20))))
    print(f"getcandy {kind}: {dict(outcomes)}")


# -- a single-use coupon raced by two orders, one per dialect --------------------------------
@pytest.mark.both_topologies
async def test_two_orders_racing_for_a_single_use_coupon_through_both_dialects(gateway, stack, single_use_coupon):
    for n in range(5):
        code, promotion_id = single_use_coupon("1", kind="items_percent")  # a flat one would be USD's only
        solidus, token, _, _ = await full_flow(gateway, card=None, coupon=code, complete=False)
        order_id = await placed_ready_order(gateway, quantity=1)
        candy = getcandy_number(order_id)
        applied = await gateway.put(f"/api/v1/baskets/{BASKETS.encode(int(candy[1:]))}/discounts",
                                    json={"coupon": code})
        assert applied.status_code == 200, applied.text
        # The GetCandy order's payment is entered at `process` for the total it then has.
        completed, processed = await asyncio.gather(
            gateway.put(f"/api/checkouts/{solidus}/complete", headers=token),
            gateway.post("/api/v1/orders/process", json={"order_id": order_id, "payment_token": "x"}))
        await settled(stack, solidus)
        await settled(stack, candy)
        winners = [number for number in (solidus, candy) if (await placed_facts(stack, number))["completed"]]
        # Exactly one completes with the coupon; the other is told, its coupon removed.
        with_coupon = []
        for number in winners:
            order = (await placed_facts(stack, number))["order"]
            if any(a["code"] == code for a in order["adjustments"]):
                with_coupon.append(number)
        assert len(with_coupon) == 1, (n, completed.text, processed.text)
        loser = completed if with_coupon == [candy] else processed
        assert loser.status_code == 422, loser.text
        if with_coupon == [candy]:
            assert loser.json()["errors"]["base"][0].startswith("One or more of the promotions on your order")
            assert (await gateway.get(f"/api/orders/{solidus}", headers=token)).json()["state"] == "address"
        else:
            assert loser.json() == {"coupon": ["The coupon is either invalid, expired or cannot be used"]}
        conn = await asyncpg.connect(stack.database_url)
        try:
            uses = await conn.fetch("SELECT order_number, completed FROM cart.promotion_uses WHERE promotion_id = $1",
                                    promotion_id)
        finally:
            await conn.close()
        assert [(r["order_number"], r["completed"]) for r in uses] == [(with_coupon[0], True)]


# -- placed orders refuse every change ---------------------------------------------------------
async def events_of(stack, number: str) -> dict[str, int]:
    conn = await asyncpg.connect(stack.database_url)
    try:
        return {schema: await conn.fetchval(f'SELECT count(*) FROM "{schema}".events WHERE aggregate_id = $1', number)
                for schema in ("cart", "order", "shipping", "payment")}
    finally:
        await conn.close()


@pytest.mark.both_topologies
async def test_a_placed_solidus_order_refuses_every_change_by_its_guest(gateway, stack):
    number, token, total, completed = await full_flow(gateway, card=None, coupon="10off")
    assert completed.status_code == 200
    await settled(stack, number)
    before = ((await gateway.get(f"/api/orders/{number}", headers=ADMIN)).json(), await events_of(stack, number))
    line_id = before[0]["line_items"][0]["id"]
    shipment = before[0]["shipments"][0]["number"]
    unauthorized = {"error": "You are not authorized to perform that action."}
    attempts = [
        gateway.post(f"/api/checkouts/{number}/line_items", headers=token, json={"line_item": {"variant_id": V1}}),
        gateway.patch(f"/api/checkouts/{number}/line_items/{line_id}", headers=token,
                      json={"line_item": {"quantity": 5}}),
        gateway.delete(f"/api/checkouts/{number}/line_items/{line_id}", headers=token),
        gateway.put(f"/api/orders/{number}/empty", headers=token),
        gateway.post(f"/api/orders/{number}/coupon_codes", headers=token, json={"coupon_code": "15percent"}),
        gateway.delete(f"/api/orders/{number}/coupon_codes/10off", headers=token),
        gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {"email": "eve@example.com"}}),
        gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
            "bill_address_attributes": {**ADDRESS, "name": "Eve"}, "ship_address_attributes": ADDRESS}}),
        gateway.put(f"/api/checkouts/{number}/next", headers=token),
        gateway.put(f"/api/checkouts/{number}/complete", headers=token),
        gateway.put(f"/api/shipments/{shipment}/select_shipping_method", headers=token,
                    json={"shipping_method_id": 2}),
        gateway.post(f"/api/orders/{number}/payments", headers=token,
                     json={"payment": {"payment_method_id": 1, "amount": total}}),
    ]
    for response in await asyncio.gather(*attempts):
        assert (response.status_code, response.json()) == (401, unauthorized), (response.request.url, response.text)
    after_ = ((await gateway.get(f"/api/orders/{number}", headers=ADMIN)).json(), await events_of(stack, number))
    assert without_live_stock(after_) == without_live_stock(before)


@pytest.mark.both_topologies
async def test_a_placed_getcandy_order_refuses_every_change(gateway, stack):
    order_id = await placed_ready_order(gateway, quantity=1)
    assert (await gateway.post("/api/v1/orders/process", json={"order_id": order_id, "payment_token": "x"})
            ).status_code == 200
    number = getcandy_number(order_id)
    await settled(stack, number)
    basket = BASKETS.encode(int(number[1:]))
    show = lambda: gateway.get(f"/api/v1/orders/{order_id}", params={"include": "lines,shipping,discounts"})  # noqa
    before = ((await show()).json(), (await gateway.get(f"/api/v1/baskets/{basket}")).json(),
              await events_of(stack, number))
    line = before[1]["data"]["lines"]["data"][0]["id"]
    methods = (await gateway.get(f"/api/v1/orders/{order_id}/shipping/methods")).json()["data"]
    placed = {"error": {"http_code": 403, "message": "This order has already been placed"}}
    basket_placed = {"error": {"http_code": 403, "message": "This basket already has an order that has been placed"}}
    expected = [
        (gateway.put(f"/api/v1/orders/{order_id}/shipping/address", json={**UK, "firstname": "Eve"}), 403, placed),
        (gateway.put(f"/api/v1/orders/{order_id}/billing/address", json={**UK, "firstname": "Eve"}), 403, placed),
        (gateway.put(f"/api/v1/orders/{order_id}/contact", json={"email": "eve@example.com"}), 403, placed),
        (gateway.put(f"/api/v1/orders/{order_id}/shipping/cost", json={"price_id": methods[0]["id"]}), 403, placed),
        (gateway.post("/api/v1/basket-lines", json={"basket_id": basket, "variants": [{"id": V, "quantity": 1}]}),
         403, basket_placed),
        (gateway.post("/api/v1/baskets", json={"basket_id": basket, "variants": [{"id": V, "quantity": 3}]}),
         403, basket_placed),
        (gateway.put(f"/api/v1/basket-lines/{line}", json={"quantity": 4}), 403, basket_placed),
        (gateway.post(f"/api/v1/basket-lines/{line}/add", json={"quantity": 1}), 403, basket_placed),
        (gateway.put(f"/api/v1/basket-lines/{line}/remove", json={"quantity": 1}), 403, basket_placed),
        (gateway.delete(f"/api/v1/basket-lines/{line}"), 403, basket_placed),
        (gateway.put(f"/api/v1/baskets/{basket}/discounts", json={"coupon": "ten"}), 403, basket_placed),
        (gateway.post("/api/v1/orders", json={"basket_id": basket}), 403, basket_placed),
        (gateway.post("/api/v1/orders/process", json={"order_id": order_id, "payment_token": "x"}), 422,
         {"error": {"http_code": 422, "message": "This order has already been processed"}}),
    ]
    responses = await asyncio.gather(*(request for request, _, _ in expected))
    for response, (_, status, body) in zip(responses, expected, strict=True):
        assert (response.status_code, response.json()) == (status, body), (response.request.url, response.text)
    after_ = ((await show()).json(), (await gateway.get(f"/api/v1/baskets/{basket}")).json(),
              await events_of(stack, number))
    assert without_live_stock(after_) == without_live_stock(before)


@pytest.mark.both_topologies
async def test_while_a_completion_holds_the_order_every_change_waits_its_turn_with_409(gateway, stack, faults):
    """Hold a completion after its cart is locked and its stock allocated (its payment step
    held still): each service refuses its part of a change, and the order completes with
    exactly what was locked."""
    number, token, total, _ = await full_flow(gateway, card=None, coupon=None, complete=False)
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    line_id, shipment = order["line_items"][0]["id"], order["shipments"][0]["number"]
    faults.arm("hold", "payment.process_payments")
    try:
        completing = asyncio.ensure_future(gateway.put(f"/api/checkouts/{number}/complete", headers=token))
        conn = await asyncpg.connect(stack.database_url)
        try:
            for _ in range(200):  # until the saga waits for the payment step
                if await conn.fetchval("SELECT step FROM \"order\".sagas WHERE key = $1 AND ended_at IS NULL",
                                       number) == 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the completion never reached the payment step")
        finally:
            await conn.close()
        changes = await asyncio.gather(
            gateway.post(f"/api/checkouts/{number}/line_items", headers=token, json={"line_item": {"variant_id": MUG}}),
            gateway.patch(f"/api/checkouts/{number}/line_items/{line_id}", headers=token,
                          json={"line_item": {"quantity": 4}}),
            gateway.post(f"/api/orders/{number}/coupon_codes", headers=token, json={"coupon_code": "10off"}),
            gateway.put(f"/api/shipments/{shipment}/select_shipping_method", headers=token,
                        json={"shipping_method_id": 2}),
            gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {"email": "eve@example.com"}}),
            gateway.put(f"/api/checkouts/{number}/next", headers=token))
        for response in changes:
            assert (response.status_code, response.text) == (409, f"Could not obtain lock on order {number}"), (
                response.request.url, response.text)
    finally:
        faults.disarm("hold", "payment.process_payments")
    completed = await completing
    assert completed.status_code == 200 and completed.json()["state"] == "complete", completed.text
    placed = completed.json()
    assert placed["total"] == total and [(item["variant_id"],
                                          item["quantity"]) for item in placed["line_items"]] == [(V1, 1)]
    await assert_charged_equals_shipped(stack, number)
