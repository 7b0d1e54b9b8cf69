"""Completion v2 against the real stack: changes racing `complete`/`process`, a single-use
coupon raced by two orders through both dialects, and placed orders that refuse every
change. What is charged and shipped is read from the stores, independently of the views."""
from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import asyncpg
import pytest

from services.gateway.getcandy.ids import BASKETS
from tests.helpers.completion import assert_charged_equals_shipped, getcandy_number, placed_facts, settled
from tests.helpers.getcandy import UK, V, placed_ready_order, stock_v
from tests.helpers.orders import without_live_stock
from tests.helpers.solidus import ADDRESS, ADMIN, V1, full_flow

# The GetCandy races and placed orders need GetCandy's catalogue.
pytestmark = pytest.mark.usefixtures("getcandy_data")

MUG = 3  # a second demo variant, ample stock
RACES = 50
GETCANDY_RACES = 20
# When one side never won a test's races: rounds of more races, the timing pushed further
# towards that side each round, at most this many.
EXTRA_ROUNDS, EXTRA_RACES = 4, 10


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


async def races(race, jitters: list[float]) -> Counter:
    """`race(jitter)` for each jitter, ten at a time: how often each outcome came."""
    slots = asyncio.Semaphore(10)

    async def one(jitter: float) -> str:
        async with slots:
            return await race(jitter)
    return Counter(await asyncio.gather(*(one(jitter) for jitter in jitters)))


async def until_each_side_won(race, rng: random.Random, runs: int, low: float, high: float, *,
                              change_won: str, completion_won: str = "complete") -> Counter:
    """`runs` races, jitters drawn from [low, high] (positive holds the completion back, so the
    change comes first; negative holds the change back). While the change or the completion
    never won, another round of races with the jitter pushed further towards the side that
    never won; then each must have won at least once, or the race was never run."""
    outcomes = await races(race, [rng.uniform(low, high) for _ in range(runs)])
    for push in range(1, EXTRA_ROUNDS + 1):
        if outcomes[change_won] and outcomes[completion_won]:
            break
        if not outcomes[change_won]:  # the completion always came first: hold it back longer
            jitters = [rng.uniform(0, high + 0.25 * push) for _ in range(EXTRA_RACES)]
        else:  # the change always came first: hold it back longer
            jitters = [rng.uniform(low - 0.5 * push, 0) for _ in range(EXTRA_RACES)]
        outcomes += await races(race, jitters)
    assert outcomes[change_won] and outcomes[completion_won], f"one side never won: {dict(outcomes)}"
    return outcomes


@pytest.mark.parametrize("kind", ["add", "quantity", "coupon"])
async def test_complete_racing_a_change_never_ships_or_charges_what_the_other_did_not(gateway, stack, kind):
    """Each race ends with exactly one winner, told so in Solidus's words, and what is charged
    equals what is shipped; over the races, each side wins at least once."""
    outcomes = await until_each_side_won(lambda jitter: solidus_race(gateway, stack, kind, jitter),
                                         random.Random(f"race-{kind}"), RACES, -0.4, 0.03, change_won=kind)
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
async def test_process_racing_a_basket_change(gateway, stack, system, kind):
    """`process` places the order as it reads it: a change that came first is placed and
    charged with it, a change that came after is refused in GetCandy's shape (a change in
    between fails `process`); what is charged equals what is shipped. Over the races, a
    change is placed with the order at least once, and refused at least once."""
    # Enough of V for every race the test may run, each placing one unit, or two with the add.
    stock_v(system, 2 * (GETCANDY_RACES + EXTRA_ROUNDS * EXTRA_RACES))
    outcomes = await until_each_side_won(lambda jitter: getcandy_race(gateway, stack, kind, jitter),
                                         random.Random(f"getcandy-{kind}"), GETCANDY_RACES, -1.2, 0.02,
                                         change_won=f"complete with the {kind}")
    assert set(outcomes) <= {"complete", f"complete with the {kind}", kind}, outcomes
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
            # The use is marked completed by the cart's `orders` subscription from Kafka (no
            # request waits on it): once that consumer has had the OrderCompleted.
            deadline = time.monotonic() + 15
            while True:
                uses = await conn.fetch("SELECT order_number, completed FROM cart.promotion_uses"
                                        " WHERE promotion_id = $1", promotion_id)
                if all(r["completed"] for r in uses) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
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
