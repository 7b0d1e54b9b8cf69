"""GetCandy acceptance checks (getcandy-api.md §8) over HTTP against the running system:
a guest, the Offline provider, 20% VAT, GBP, variant V priced 10.00 (with 50 in stock, as
several tests place orders; check 5 only needs fewer than 99)."""
from __future__ import annotations

import re

import asyncpg
import pytest

from services.gateway.getcandy.ids import ORDERS
from tests.helpers.getcandy import MAIN, UK, V, basket, placed_ready_order

# The same tests against both topologies (tests/conftest.py), with the GetCandy catalogue loaded.
pytestmark = [pytest.mark.both_topologies, pytest.mark.usefixtures("getcandy_data")]


async def test_1_2_3_basket_lines(gateway):
    b = await basket(gateway)
    assert re.fullmatch(r"[a-z0-9]{8,}", b["id"])
    assert len(b["lines"]["data"]) == 1 and b["lines"]["data"][0]["quantity"] == 2
    assert (b["sub_total"], b["tax_total"], b["total"], b["discount_total"]) == (20.0, 4.0, 24.0, 0)
    more = (await gateway.post("/api/v1/basket-lines", json={"basket_id": b["id"],
                                                             "variants": [{"id": V, "quantity": 1}]})).json()["data"]
    assert more["id"] == b["id"] and more["lines"]["data"][0]["quantity"] == 3
    replaced = (await gateway.post("/api/v1/baskets", json={"basket_id": b["id"],
                                                            "variants": [{"id": V, "quantity": 1}]})).json()["data"]
    assert [item["quantity"] for item in replaced["lines"]["data"]] == [1]
    fetched = await gateway.get(f"/api/v1/baskets/{b['id']}")
    assert fetched.status_code == 200 and fetched.json()["data"]["total"] == 12.0


async def test_4_5_invalid_variants_and_quantities(gateway):
    wrong = await gateway.post("/api/v1/basket-lines", json={"variants": [{"id": "zzzzzzzz", "quantity": 1}]})
    assert wrong.status_code == 422 and wrong.json() == {"variants.0.id": ["The variant ID is incorrect"]}
    too_many = await gateway.post("/api/v1/basket-lines", json={"variants": [{"id": V, "quantity": 99}]})
    assert too_many.status_code == 422 and "Insufficient stock levels" in too_many.json()["variants.0.quantity"]
    zero = await gateway.post("/api/v1/basket-lines", json={"variants": [{"id": V, "quantity": 0}]})
    assert zero.status_code == 422 and "variants.0.quantity" in zero.json()
    assert (await gateway.get("/api/v1/baskets/zzzzzzzz")).json() == {
        "error": {"http_code": 404, "message": "Resource not found"}}


async def test_6_7_8_orders_from_baskets(gateway):
    missing = await gateway.post("/api/v1/orders", json={})
    assert missing.status_code == 422 and missing.json() == {"basket_id": ["The basket id field is required."]}
    b = await basket(gateway)
    order = await gateway.post("/api/v1/orders", json={"basket_id": b["id"]})
    assert order.status_code == 200
    data = order.json()["data"]
    assert data["status"] == "awaiting-payment" and data["placed_at"] is None and data["reference"] is None
    assert data["display_id"].startswith("#ORD-")
    assert (data["sub_total"], data["tax_total"], data["delivery_total"], data["order_total"]) == (2000, 400, 0, 2400)
    again = await gateway.post("/api/v1/orders", json={"basket_id": b["id"]})
    assert again.json()["data"]["id"] == data["id"]


async def test_9_to_13_order_details(gateway):
    b = await basket(gateway)
    o = (await gateway.post("/api/v1/orders", json={"basket_id": b["id"]})).json()["data"]["id"]
    partial = await gateway.put(f"/api/v1/orders/{o}/shipping/address",
                                json={k: v for k, v in UK.items() if k not in ("firstname", "country")})
    assert partial.status_code == 422 and {"firstname", "country"} <= set(partial.json())
    full = await gateway.put(f"/api/v1/orders/{o}/shipping/address", json=UK)
    assert full.status_code == 200
    shipping = full.json()["data"]["shipping_details"]
    assert (shipping["firstname"], shipping["zip"], shipping["country"]) == ("Ada", "CM2 5TH", "United Kingdom")
    unknown = await gateway.put("/api/v1/orders/zzzzzzzz/billing/address", json=UK)
    assert unknown.status_code == 404 and unknown.json()["error"]["http_code"] == 404
    # A well-formed id of an order that does not exist: the order service's own 404, also
    # ahead of an address it would refuse.
    never_placed = MAIN.encode(999_999_999)
    for path, body in (("billing/address", UK), ("shipping/address", {**UK, "country": "Atlantis"}),
                       ("contact", {"email": "ada@example.com"})):
        missing = await gateway.put(f"/api/v1/orders/{never_placed}/{path}", json=body)
        assert missing.status_code == 404, (path, missing.text)
        assert missing.json() == {"error": {"http_code": 404, "message": "Resource not found"}}
    methods = (await gateway.get(f"/api/v1/orders/{o}/shipping/methods")).json()["data"]
    assert [(m["rate"], m["tax"], m["method"]["data"]["name"]) for m in methods] == [(795, 159, "UK Standard")]
    no_price = await gateway.put(f"/api/v1/orders/{o}/shipping/cost", json={})
    assert no_price.status_code == 422 and no_price.json() == {"price_id": ["Please choose a shipping option"]}
    cost = await gateway.put(f"/api/v1/orders/{o}/shipping/cost", json={"price_id": methods[0]["id"]})
    assert cost.status_code == 200, cost.text
    data = cost.json()["data"]
    assert (data["delivery_total"], data["tax_total"], data["order_total"]) == (795, 559, 3354)
    assert data["shipping_method"] == "UK Standard"
    contact = await gateway.put(f"/api/v1/orders/{o}/contact", json={"email": "a@b.com", "phone": "123"})
    assert contact.status_code == 200 and contact.json()["data"]["contact_details"] == {"phone": "123",
                                                                                       "email": "a@b.com"}


async def test_14_provider_and_types(gateway):
    assert (await gateway.get("/api/v1/payments/provider")).json() == {
        "data": {"name": "Offline", "client_token": "OFFLINE"}}
    types = (await gateway.get("/api/v1/payments/types")).json()["data"]
    assert [t["handle"] for t in types] == ["card"]


async def test_15_to_18_process_offline(gateway):
    o = await placed_ready_order(gateway)
    needs = await gateway.post("/api/v1/orders/process", json={"order_id": o})
    assert needs.status_code == 422 and {"payment_token", "payment_type_id"} <= set(needs.json())
    done = await gateway.post("/api/v1/orders/process", json={"order_id": o, "payment_token": "x"})
    assert done.status_code == 200, done.text
    data = done.json()["data"]
    assert data["status"] == "payment-processing" and data["placed_at"] and data["type"] == "Offline"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{4}", data["reference"])
    assert data["invoice_reference"] == "#INV-" + data["reference"]
    assert data["order_total"] == 3354 and any(item["is_shipping"] for item in data["lines"]["data"])
    again = await gateway.post("/api/v1/orders/process", json={"order_id": o, "payment_token": "x"})
    assert again.status_code == 422 and again.json()["error"]["message"] == "This order has already been processed"
    basket_id = (await gateway.get(f"/api/v1/orders/{o}", params={"include": "lines"})).json()["data"]
    assert basket_id["status"] == "payment-processing"


async def test_18_a_placed_basket_cannot_be_ordered_again(gateway):
    b = await basket(gateway, quantity=1)
    o = (await gateway.post("/api/v1/orders", json={"basket_id": b["id"]})).json()["data"]["id"]
    for step, body in (("shipping/address", UK), ("billing/address", UK)):
        await gateway.put(f"/api/v1/orders/{o}/{step}", json=body)
    methods = (await gateway.get(f"/api/v1/orders/{o}/shipping/methods")).json()["data"]
    await gateway.put(f"/api/v1/orders/{o}/shipping/cost", json={"price_id": methods[0]["id"]})
    assert (await gateway.post("/api/v1/orders/process", json={"order_id": o, "payment_token": "x"})).status_code == 200
    placed = await gateway.post("/api/v1/orders", json={"basket_id": b["id"]})
    assert placed.status_code == 403
    assert placed.json() == {"error": {"http_code": 403,
                                       "message": "This basket already has an order that has been placed"}}


async def test_19_declined_card_fails_and_can_be_processed_again(gateway, stack):
    o = await placed_ready_order(gateway, quantity=1)
    card = (await gateway.get("/api/v1/payments/types")).json()["data"][0]["id"]
    declined = await gateway.post("/api/v1/orders/process",
                                  json={"order_id": o, "payment_type_id": card, "payment_token": "tok_declined"})
    assert declined.status_code == 403
    assert declined.json() == {"error": {"http_code": 403, "message": "Payment has failed"}}
    order = (await gateway.get(f"/api/v1/orders/{o}")).json()["data"]
    assert order["status"] == "failed" and order["placed_at"] is None
    ok = await gateway.post("/api/v1/orders/process",
                            json={"order_id": o, "payment_type_id": card, "payment_token": "tok_ok"})
    assert ok.status_code == 200 and ok.json()["data"]["status"] == "payment-received"
    bad_token = await placed_ready_order(gateway, quantity=1)
    invalid = await gateway.post("/api/v1/orders/process",
                                 json={"order_id": bad_token, "payment_type_id": card, "payment_token": "nope"})
    assert invalid.status_code == 422 and invalid.json()["error"]["message"] == "The payment token is invalid"


async def test_a_process_the_payment_service_refuses_answers_as_the_gateway_did_and_can_be_retried(gateway):
    """`process` is one call of the order service (#25.4): a refusal of the payment service
    (an invalid token), of the payment type, or of the order itself keeps GetCandy's bodies."""
    o = await placed_ready_order(gateway, quantity=1)
    unknown = await gateway.post("/api/v1/orders/process",
                                 json={"order_id": o, "payment_type_id": MAIN.encode(9999), "payment_token": "x"})
    assert unknown.status_code == 404 and unknown.json() == {
        "error": {"http_code": 404, "message": "Resource not found"}}
    refused = await gateway.post("/api/v1/orders/process",
                                 json={"order_id": o, "payment_type": "card", "payment_token": "nope"})
    assert refused.status_code == 422 and refused.json() == {
        "error": {"http_code": 422, "message": "The payment token is invalid"}}
    order = (await gateway.get(f"/api/v1/orders/{o}")).json()["data"]
    assert order["placed_at"] is None and order["reference"] is None
    ok = await gateway.post("/api/v1/orders/process",
                            json={"order_id": o, "payment_type": "card", "payment_token": "tok_ok"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["data"]["status"] == "payment-received" and ok.json()["data"]["placed_at"]
    again = await gateway.post("/api/v1/orders/process", json={"order_id": o, "payment_token": "x"})
    assert again.status_code == 422 and again.json() == {
        "error": {"http_code": 422, "message": "This order has already been processed"}}


async def test_billing_is_required_before_processing(gateway):
    b = await basket(gateway, quantity=1)
    o = (await gateway.post("/api/v1/orders", json={"basket_id": b["id"]})).json()["data"]["id"]
    await gateway.put(f"/api/v1/orders/{o}/shipping/address", json=UK)
    response = await gateway.post("/api/v1/orders/process", json={"order_id": o, "payment_token": "x"})
    assert response.status_code == 403
    assert response.json()["error"]["message"] == "The order is missing billing information"
    assert (await gateway.post("/api/v1/orders/process",
                               json={"order_id": "zzzzzzzz", "payment_token": "x"})).status_code == 404


async def test_20_coupon_on_basket_and_order(gateway):
    b = await basket(gateway, quantity=1)
    nope = await gateway.put(f"/api/v1/baskets/{b['id']}/discounts", json={"coupon": "NOPE"})
    assert nope.status_code == 422 and "coupon" in nope.json()
    ten = await gateway.put(f"/api/v1/baskets/{b['id']}/discounts", json={"coupon": "ten"})
    assert ten.status_code == 200
    data = ten.json()["data"]
    assert (data["discount_total"], data["tax_total"], data["total"]) == (1.0, 1.8, 10.8)
    order = (await gateway.post("/api/v1/orders", json={"basket_id": b["id"], "include": "discounts"})).json()["data"]
    assert (order["discount_total"], order["sub_total"], order["order_total"]) == (100, 900, 1080)
    assert order["discounts"]["data"][0]["amount"] == 100
    # Coupons survive line changes (the original dropped them).
    line = data["lines"]["data"][0]["id"]
    more = (await gateway.post(f"/api/v1/basket-lines/{line}/add", json={"quantity": 1})).json()["data"]
    assert more["lines"]["data"][0]["quantity"] == 2 and more["discount_total"] == 2.0


async def test_basket_line_operations(gateway):
    b = await basket(gateway, quantity=2)
    line = b["lines"]["data"][0]["id"]
    assert (await gateway.put(f"/api/v1/basket-lines/{line}", json={"quantity": 4})).json()["data"]["lines"]["data"][0][
        "quantity"] == 4
    assert (await gateway.put(f"/api/v1/basket-lines/{line}", json={"quantity": 0})).status_code == 422
    removed = (await gateway.put(f"/api/v1/basket-lines/{line}/remove", json={"quantity": 1})).json()["data"]
    assert removed["lines"]["data"][0]["quantity"] == 3
    assert (await gateway.delete(f"/api/v1/basket-lines/{line}")).status_code == 204
    assert (await gateway.get(f"/api/v1/baskets/{b['id']}")).json()["data"]["lines"]["data"] == []
    assert (await gateway.put("/api/v1/basket-lines/zzzzzzzz", json={"quantity": 1})).status_code == 404


async def test_products_include_variants(gateway):
    products = (await gateway.get("/api/v1/products", params={"include": "variants"})).json()["data"]
    tee = next(p for p in products if p["slug"] == "candy-tee")
    assert tee["variants"]["data"][0]["id"] == V and tee["variants"]["data"][0]["price"] == 10.0


async def test_both_dialects_emit_the_same_order_events(gateway, stack):
    o = await placed_ready_order(gateway, quantity=1)
    await gateway.post("/api/v1/orders/process", json={"order_id": o, "payment_token": "x"})
    number = f"R{ORDERS.decode(o)[0]:09d}"
    conn = await asyncpg.connect(stack.database_url)
    try:
        # The order's stream, and its completion's answers (the saga calls the participants).
        types = {r["type"] for r in await conn.fetch(
            'SELECT type FROM "order".events WHERE aggregate_id = $1'
            " UNION SELECT type FROM payment.events WHERE aggregate_id = $1", number)}
    finally:
        await conn.close()
    assert {"order.OrderCreated", "order.CheckoutAdvanced", "order.ShipAddressChanged", "order.DeliveryRequested",
            "order.CompletionRequested", "payment.PaymentsProcessed", "order.OrderCompleted"} <= types


async def test_removing_a_discount_from_a_basket(gateway):
    b = await basket(gateway, quantity=1)
    with_coupon = (await gateway.put(f"/api/v1/baskets/{b['id']}/discounts", json={"coupon": "15percent"})).json()
    discount = with_coupon["data"]["discounts"]["data"][0]
    assert discount["coupon"] == "15percent" and with_coupon["data"]["discount_total"] == 1.5
    unknown = await gateway.request("DELETE", f"/api/v1/baskets/{b['id']}/discounts", json={"discount_id": "zzzzzzzz"})
    assert unknown.status_code == 422 and "discount_id" in unknown.json()
    removed = await gateway.request("DELETE", f"/api/v1/baskets/{b['id']}/discounts",
                                    json={"discount_id": discount["id"]})
    assert removed.status_code == 200
    assert removed.json()["data"]["discounts"]["data"] == [] and removed.json()["data"]["total"] == 12.0
