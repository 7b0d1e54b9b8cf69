"""The whole documented Solidus flow, end to end over HTTP against the running services,
for a check and a card payment, and the saga's compensations (research §12: 20-24)."""
from __future__ import annotations

import asyncio
from decimal import Decimal

import asyncpg
import pytest

from tests.helpers.solidus import ADMIN, CARD, V1, full_flow, in_payment, stock_is, stock_of, wait_for
from tests.helpers.statements import calls, counting_statements

# The same tests against both topologies (tests/conftest.py).
pytestmark = pytest.mark.both_topologies


async def test_21_check_payment_flow_completes_with_balance_due(gateway, stack):
    before = await stock_of(stack, V1)
    number, token, total, complete = await full_flow(gateway, card=None, quantity=2)
    assert complete.status_code == 200, complete.text
    order = complete.json()
    assert order["state"] == "complete" and order["completed_at"]
    assert total == "39.98"  # 2 × 19.99 + 10.00 ground − 10.00 coupon
    assert order["payment_state"] == "balance_due" and order["shipment_state"] == "pending"
    assert order["payments"][0]["state"] == "checkout"  # checks are not processed
    assert order["shipments"][0]["state"] == "pending"
    assert await stock_of(stack, V1) == before - 2
    # 24: a completed order can no longer be changed by its guest.
    for response in (await gateway.post(f"/api/checkouts/{number}/line_items",
                                        json={"line_item": {"variant_id": V1}}, headers=token),
                     await gateway.put(f"/api/checkouts/{number}/next", headers=token),
                     await gateway.put(f"/api/checkouts/{number}/complete", headers=token)):
        assert response.status_code == 401
    assert (await gateway.get(f"/api/orders/{number}", headers=token)).json()["state"] == "complete"


async def test_22_card_payment_flow_authorises(gateway, stack):
    number, token, total, complete = await full_flow(gateway, card=CARD)
    assert complete.status_code == 200, complete.text
    order = complete.json()
    assert order["state"] == "complete" and order["payments"][0]["state"] == "pending"
    assert order["payment_state"] == "balance_due" and order["shipment_state"] == "pending"
    conn = await asyncpg.connect(stack.database_url)
    try:
        calls = await conn.fetch("SELECT action, success FROM payment.gateway_calls WHERE idempotency_key LIKE $1",
                                 f"{number}-%")
    finally:
        await conn.close()
    assert [(c["action"], c["success"]) for c in calls] == [("authorize", True)]


async def test_23_declined_card_compensates(gateway, stack):
    before = await stock_of(stack, V1)
    declined_card = {**CARD, "number": "4000000000000002"}
    number, token, total, complete = await full_flow(gateway, card=declined_card)
    assert complete.status_code == 422, complete.text
    assert complete.json()["errors"]["base"] == ["Bogus Gateway: Forced failure - authorize"]
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "payment" and order["payments"][0]["state"] == "failed"
    assert order["completed_at"] is None
    # The allocated unit is released by shipping reacting to CompletionFailed: a
    # compensation that follows the answer, not part of it.
    await wait_for(lambda: stock_is(stack, V1, before))
    # The customer pays with a good card and completes.
    retry = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "payments_attributes": [{"payment_method_id": 2, "source_attributes": CARD}]}})
    assert retry.status_code == 200 and retry.json()["state"] == "confirm"
    done = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert done.status_code == 200 and done.json()["state"] == "complete"
    assert await stock_of(stack, V1) == before - 1


async def test_20_expected_total_and_complete_outside_confirm(gateway, guest_order):
    number, token = guest_order
    order = await in_payment(gateway, number, token)
    early = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert early.status_code == 422 and early.json()["errors"] == {}
    await gateway.post(f"/api/orders/{number}/payments", headers=token,
                       json={"payment": {"payment_method_id": 1, "amount": order["total"]}})
    await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    mismatch = await gateway.put(f"/api/checkouts/{number}/complete", headers=token, json={"expected_total": "0.01"})
    assert mismatch.status_code == 400
    assert mismatch.json() == {"errors": {"expected_total": ["Expected total does not match actual total."]}}


async def test_no_payment_found(gateway, guest_order):
    number, token = guest_order
    await in_payment(gateway, number, token)
    assert (await gateway.put(f"/api/checkouts/{number}/next", headers=token)).json()["state"] == "confirm"
    response = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert response.status_code == 422 and response.json()["errors"]["base"] == ["No payment found"]


async def test_22_auto_capture_completes_paid_and_ready(gateway, system):
    await system.acall("payment", "load_payment_methods", methods=[  # an auto-capturing card method
        {"id": 90, "name": "Card (auto-capture)", "method_type": "gateway", "auto_capture": True}])
    created = (await gateway.post("/api/orders", json={})).json()
    number, token = created["number"], {"X-Spree-Order-Token": created["token"]}
    order = await in_payment(gateway, number, token)
    # The gateway caches payment methods per process; the method id is all the flow needs.
    confirm = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "payments_attributes": [{"payment_method_id": 90, "source_attributes": CARD}]}})
    assert confirm.status_code == 200 and confirm.json()["state"] == "confirm"
    done = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["payments"][0]["state"] == "completed" and body["payment_total"] == order["total"]
    assert body["payment_state"] == "paid" and body["shipment_state"] == "ready"
    assert body["shipments"][0]["state"] == "ready"


async def test_admin_captures_an_authorised_payment(gateway, stack):
    number, token, total, complete = await full_flow(gateway, card=CARD)
    payment_id = complete.json()["payments"][0]["id"]
    assert (await gateway.put(f"/api/orders/{number}/payments/{payment_id}/capture",
                              headers=token)).status_code == 401
    captured = await gateway.put(f"/api/orders/{number}/payments/{payment_id}/capture", headers=ADMIN)
    assert captured.status_code == 200, captured.text
    assert captured.json()["state"] == "completed"

    async def paid():
        order = (await gateway.get(f"/api/orders/{number}", headers=ADMIN)).json()
        return order["payment_state"] == "paid"
    await wait_for(paid)
    order = (await gateway.get(f"/api/orders/{number}", headers=ADMIN)).json()
    assert order["payment_total"] == total and order["shipment_state"] == "ready"
    again = await gateway.put(f"/api/orders/{number}/payments/{payment_id}/capture", headers=ADMIN)
    assert again.status_code == 422  # already captured
    conn = await asyncpg.connect(stack.database_url)
    try:
        actions = await conn.fetch("SELECT action FROM payment.gateway_calls WHERE idempotency_key LIKE $1"
                                   " ORDER BY created_at", f"{number}-%")
    finally:
        await conn.close()
    assert [a["action"] for a in actions] == ["authorize", "capture"]


async def test_admin_cancels_a_completed_order(gateway, stack):
    before = await stock_of(stack, V1)
    number, token, total, complete = await full_flow(gateway, card=CARD)
    assert await stock_of(stack, V1) == before - 1
    assert (await gateway.put(f"/api/orders/{number}/cancel", headers=token)).status_code == 401
    canceled = await gateway.put(f"/api/orders/{number}/cancel", headers=ADMIN)
    assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"

    async def settled():
        order = (await gateway.get(f"/api/orders/{number}", headers=ADMIN)).json()
        return order["payments"][0]["state"] == "void" and await stock_of(stack, V1) == before
    await wait_for(settled)
    order = (await gateway.get(f"/api/orders/{number}", headers=ADMIN)).json()
    assert order["payment_state"] == "void"
    assert (await gateway.put(f"/api/orders/{number}/cancel", headers=ADMIN)).status_code == 422


async def test_single_use_coupon_is_used_up_by_a_completed_order(gateway, single_use_coupon):
    code, _ = single_use_coupon()
    number, token, total, complete = await full_flow(gateway, card=None, coupon=code)
    assert complete.status_code == 200

    async def refused_elsewhere():
        other = (await gateway.post("/api/orders", json={})).json()
        headers = {"X-Spree-Order-Token": other["token"]}
        await gateway.post(f"/api/checkouts/{other['number']}/line_items",
                           json={"line_item": {"variant_id": V1}}, headers=headers)
        response = await gateway.post(f"/api/orders/{other['number']}/coupon_codes",
                                      json={"coupon_code": code}, headers=headers)
        return response.status_code == 422 and response.json()["status_code"] == "coupon_code_max_usage"
    await wait_for(refused_elsewhere)


async def test_the_order_service_authorises_a_guests_next_and_complete(gateway, system, faults):
    """The gateway forwards the guest's token with `next` and `complete` instead of reading
    the order first; the refusals are Solidus's all the same."""
    number, token, total, _ = await full_flow(gateway, card=None, complete=False)
    unauthorized = {"error": "You are not authorized to perform that action."}
    for step in ("next", "complete"):
        wrong = await gateway.put(f"/api/checkouts/{number}/{step}", headers={"X-Spree-Order-Token": "nope"})
        assert (wrong.status_code, wrong.json()) == (401, unauthorized)
        unknown = await gateway.put(f"/api/checkouts/R000000001/{step}", headers=token)
        assert (unknown.status_code, unknown.json()) == (401, unauthorized)
    mismatch = await gateway.put(f"/api/checkouts/{number}/complete", headers=token, json={"expected_total": "1.00"})
    assert mismatch.status_code == 400  # a step that must see the order first still reads it

    # Completing locks the order until the saga settles: hold the saga still to see it.
    faults.arm("hold", "saga.answer")
    try:
        started = await system.acall("order", "complete", as_caller="gateway", number=number)
        assert started["awaiting"]
        # Solidus's OrderMutex answer: the order is locked by the request completing it.
        for step in ("next", "complete"):
            refused = await gateway.put(f"/api/checkouts/{number}/{step}", headers=token)
            assert (refused.status_code, refused.text) == (409, f"Could not obtain lock on order {number}")
    finally:
        faults.disarm("hold", "saga.answer")
    deadline = asyncio.get_running_loop().time() + 20
    while (await gateway.get(f"/api/orders/{number}", headers=token)).json()["state"] != "complete":
        assert asyncio.get_running_loop().time() < deadline, "the saga did not complete the order"
        await asyncio.sleep(0.1)


async def test_a_coupon_used_up_while_the_order_waited_is_removed_at_complete(gateway, single_use_coupon):
    """Solidus's completion guard "promotions still eligible": the coupon goes, the checkout
    restarts at `address`, and the guest is told to check the new amounts (422)."""
    code, _ = single_use_coupon()
    first, first_token, _, _ = await full_flow(gateway, card=None, coupon=code, complete=False)
    second, second_token, _, _ = await full_flow(gateway, card=None, coupon=code, complete=False)
    # The first completion locks its cart and reserves the coupon's only use.
    assert (await gateway.put(f"/api/checkouts/{first}/complete", headers=first_token)).status_code == 200

    # A caller without the order's token changes nothing.
    stranger = await gateway.put(f"/api/checkouts/{second}/complete", headers={"X-Spree-Order-Token": "nope"})
    assert stranger.status_code == 401
    before = (await gateway.get(f"/api/orders/{second}", headers=ADMIN)).json()
    assert before["state"] == "confirm" and [a["label"] for a in before["adjustments"]] != []

    refused = await gateway.put(f"/api/checkouts/{second}/complete", headers=second_token)
    assert refused.status_code == 422
    assert refused.json() == {
        "error": "The order could not be transitioned. Please fix the errors and try again.",
        "errors": {"base": ["One or more of the promotions on your order have become ineligible and were removed."
                            " Please check the new order amounts and try again."]}}
    after = (await gateway.get(f"/api/orders/{second}", headers=second_token)).json()
    assert after["state"] == "address" and after["completed_at"] is None
    assert after["adjustments"] == [] and after["adjustment_total"] == "0.0"
    # Back before delivery: the shipments go too, and are built again at the next `next`.
    assert after["item_total"] == before["item_total"] and after["shipments"] == []
    assert Decimal(after["total"]) == Decimal(after["item_total"])
    # The first order keeps its coupon and stays complete.
    placed = (await gateway.get(f"/api/orders/{first}", headers=ADMIN)).json()
    assert placed["state"] == "complete" and len(placed["adjustments"]) == 1


async def test_only_promotions_with_a_usage_limit_are_row_locked_at_complete(gateway, stack, single_use_coupon):
    """Locking the cart row-locks (and reads) only the promotions whose uses are counted: a
    coupon without a limit comes from the cart's reference data (services/cart/commands.py)."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        await counting_statements(conn)

        async def locks() -> int:
            return await calls(conn, "%FROM promotions WHERE id = ANY%FOR UPDATE")

        before = await locks()
        number, _, _, done = await full_flow(gateway, card=CARD, coupon="10off")  # no usage limit
        assert done.json()["state"] == "complete", done.text
        unlimited = await locks() - before
        code, _ = single_use_coupon()
        number, _, _, done = await full_flow(gateway, card=CARD, coupon=code)
        assert done.json()["state"] == "complete", done.text
        limited = await locks() - before - unlimited
        uses = await conn.fetchval("SELECT count(*) FROM cart.promotion_uses WHERE order_number = $1", number)
    finally:
        await conn.close()
    assert (unlimited, limited, uses) == (0, 1, 1)
