"""Solidus checkout steps over HTTP: addresses, next, delivery with shipments and rates."""
from __future__ import annotations

import pytest

from tests.helpers.solidus import ADDRESS, CARD, V1, in_address, in_delivery, in_payment

# The same tests against both topologies (tests/conftest.py).
pytestmark = pytest.mark.both_topologies

async def test_8_9_next_needs_line_items(gateway, guest_order):
    number, token = guest_order
    refused = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    assert refused.status_code == 422
    assert refused.json()["error"].startswith("The order could not be transitioned")
    assert refused.json()["errors"]["base"] == [
        "There are no items for this order. Please add an item to the order to continue."]
    await in_address(gateway, number, token)


async def test_10_invalid_address_fields(gateway, guest_order):
    number, token = guest_order
    await in_address(gateway, number, token)
    no_city = {k: v for k, v in ADDRESS.items() if k != "city"}
    response = await gateway.patch(f"/api/checkouts/{number}", headers=token,
                                   json={"order": {"bill_address_attributes": no_city}})
    assert response.status_code == 422
    assert response.json() == {"error": "Invalid resource. Please fix errors and try again.",
                               "errors": {"bill_address.city": ["can't be blank"]}}
    bad_state = await gateway.patch(f"/api/checkouts/{number}", headers=token,
                                    json={"order": {"ship_address_attributes": {**ADDRESS, "state_name": "ZZ"}}})
    assert bad_state.status_code == 422 and bad_state.json()["errors"] == {"ship_address.state": ["can't be blank"]}


async def test_11_leaving_address_needs_an_email(gateway, guest_order):
    number, token = guest_order
    await in_address(gateway, number, token)
    response = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "bill_address_attributes": ADDRESS, "ship_address_attributes": ADDRESS}})
    assert response.status_code == 422
    assert response.json()["error"].startswith("The order could not be transitioned")
    assert response.json()["errors"]["email"] == ["can't be blank"]


async def test_12_entering_delivery_lists_shipments_and_rates_in_the_same_response(gateway, guest_order):
    number, token = guest_order
    order = await in_delivery(gateway, number, token, quantity=2)
    assert order["state"] == "delivery" and order["email"] == "ada@example.com"
    assert order["ship_address"]["city"] == "Portland" and order["ship_address"]["state"]["abbr"] == "OR"
    [shipment] = order["shipments"]
    assert shipment["number"].startswith("H") and len(shipment["number"]) == 12
    rates = shipment["shipping_rates"]
    assert [(r["name"], r["cost"], r["selected"]) for r in rates] == [("Ground", "10.0", True),
                                                                      ("Express", "15.0", False)]
    assert order["ship_total"] == "10.0" and order["item_total"] == "39.98" and order["total"] == "49.98"
    assert shipment["manifest"] == [{"variant_id": V1, "quantity": 2, "states": {"on_hand": 2}}]


async def test_13_14_selecting_a_rate_moves_to_payment(gateway, guest_order):
    number, token = guest_order
    order = await in_delivery(gateway, number, token)
    empty = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={})
    assert empty.status_code == 422 and empty.json()["missing_param"] == "order"
    shipment = order["shipments"][0]
    express = next(r for r in shipment["shipping_rates"] if r["name"] == "Express")
    bad = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "shipments_attributes": [{"id": shipment["id"], "selected_shipping_rate_id": 99999999}]}})
    assert bad.status_code == 422
    response = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "shipments_attributes": {"0": {"id": shipment["id"], "selected_shipping_rate_id": express["id"]}}}})
    assert response.status_code == 200, response.text
    order = response.json()
    assert order["state"] == "payment" and order["ship_total"] == "15.0"
    assert order["shipments"][0]["selected_shipping_rate"]["id"] == express["id"]
    assert order["total"] == "34.99"


async def test_shipment_endpoints_with_the_order_token(gateway, guest_order):
    number, token = guest_order
    order = await in_delivery(gateway, number, token)
    shipment_number = order["shipments"][0]["number"]
    assert (await gateway.get(f"/api/shipments/{shipment_number}/estimated_rates")).status_code == 401
    rates = await gateway.get(f"/api/shipments/{shipment_number}/estimated_rates", headers=token)
    assert rates.status_code == 200
    assert [(r["name"], r["cost"], r["display_cost"]) for r in rates.json()["shipping_rates"]] == [
        ("Ground", "10.0", "$10.00"), ("Express", "15.0", "$15.00")]
    assert (await gateway.get("/api/shipments/H00000000000/estimated_rates", headers=token)).status_code == 401
    missing = await gateway.put(f"/api/shipments/{shipment_number}/select_shipping_method", headers=token, json={})
    assert missing.status_code == 422
    unknown = await gateway.put(f"/api/shipments/{shipment_number}/select_shipping_method", headers=token,
                                json={"shipping_method_id": 999})
    assert unknown.status_code == 404
    elsewhere = await gateway.put(f"/api/shipments/{shipment_number}/select_shipping_method", headers=token,
                                  json={"shipping_method_id": 3})  # UK Standard: neither to the US nor in USD
    assert elsewhere.status_code == 422
    assert elsewhere.json()["errors"] == {"shipping_method_id": ["cannot ship this shipment"]}
    chosen = await gateway.put(f"/api/shipments/{shipment_number}/select_shipping_method", headers=token,
                               json={"shipping_method_id": 2})
    assert chosen.status_code == 200 and chosen.json()["selected_shipping_rate"]["name"] == "Express"
    # As Solidus's: the shipment is re-rated for that method alone, whose rate replaces the others.
    [rate] = chosen.json()["shipping_rates"]
    assert (rate["name"], rate["cost"], rate["selected"]) == ("Express", "15.0", True)
    assert rate["id"] not in {r["id"] for r in order["shipments"][0]["shipping_rates"]}
    assert chosen.json()["cost"] == "15.0"
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["ship_total"] == "15.0"  # read-your-writes: no sleep
    assert order["shipments"][0]["shipping_rates"] == chosen.json()["shipping_rates"]


async def test_a_line_item_change_restarts_the_checkout(gateway, guest_order):
    number, token = guest_order
    await in_delivery(gateway, number, token)
    response = await gateway.post(f"/api/checkouts/{number}/line_items",
                                  json={"line_item": {"variant_id": 3, "quantity": 1}}, headers=token)
    assert response.status_code == 201
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "address" and order["shipments"] == [] and order["ship_total"] == "0.0"


async def test_insufficient_stock_when_entering_delivery(gateway, guest_order):
    number, token = guest_order
    await in_address(gateway, number, token, variant_id=4, quantity=5)  # only 3 posters exist
    response = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "email": "a@b.co", "bill_address_attributes": ADDRESS, "ship_address_attributes": ADDRESS}})
    assert response.status_code == 422
    assert response.json() == {"errors": ["Quantity is not available for items in your order"],
                               "type": "insufficient_stock"}
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "address"


async def test_no_rates_for_the_destination(gateway, guest_order):
    number, token = guest_order
    await in_address(gateway, number, token)
    gb = {**ADDRESS, "country_iso": "GB", "state_name": None, "zipcode": "CM2 5TH"}
    response = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "email": "a@b.co", "bill_address_attributes": gb, "ship_address_attributes": gb}})
    assert response.status_code == 422
    assert response.json()["errors"]["base"] == ["We are unable to calculate shipping rates for the selected items."]


async def test_countries(gateway):
    body = (await gateway.get("/api/countries")).json()
    us = next(c for c in body["countries"] if c["iso"] == "US")
    assert us["states_required"] and {"name": "Oregon", "abbr": "OR"}.items() <= us["states"][9].items()


async def test_17_18_19_payments_and_confirm(gateway, guest_order):
    number, token = guest_order
    order = await in_payment(gateway, number, token)
    new = (await gateway.get(f"/api/orders/{number}/payments/new", headers=token)).json()
    assert [(m["name"], m["partial_name"]) for m in new["payment_methods"] if m["id"] in (1, 2)] == [
        ("Check", "check"), ("Credit Card", "gateway")]
    no_source = await gateway.post(f"/api/orders/{number}/payments", headers=token,
                                   json={"payment": {"payment_method_id": 2, "amount": "1"}})
    assert no_source.status_code == 422
    assert no_source.json() == {"error": "Invalid resource. Please fix errors and try again.",
                                "errors": {"source": ["can't be blank"]}}
    bad_card = await gateway.post(f"/api/orders/{number}/payments", headers=token, json={"payment": {
        "payment_method_id": 2, "amount": "1", "source_attributes": {"number": "", "month": "x", "year": "y"}}})
    assert bad_card.status_code == 422 and bad_card.json()["errors"]["Credit Card"] == [
        "Card Number can't be blank", "Month is not a number", "Year is not a number",
        "Verification Value can't be blank"]
    assert (await gateway.post(f"/api/orders/{number}/payments", headers=token,
                               json={"payment": {"payment_method_id": 999, "amount": "1"}})).status_code == 404
    assert (await gateway.post(f"/api/orders/{number}/payments", headers=token,
                               json={"payment": {"payment_method_id": 1, "amount": "abc"}})).status_code == 422
    check = await gateway.post(f"/api/checkouts/{number}/payments", headers=token,  # the alias route
                               json={"payment": {"payment_method_id": 1, "amount": order["total"]}})
    assert check.status_code == 201, check.text
    assert check.json()["state"] == "checkout" and check.json()["amount"] == order["total"]
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "payment" and order["payments"][0]["payment_method"]["name"] == "Check"
    confirm = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    assert confirm.status_code == 200 and confirm.json()["state"] == "confirm"
    again = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    assert again.status_code == 422 and again.json()["errors"] == {}


async def test_22_card_payment_through_update_checkout(gateway, guest_order):
    number, token = guest_order
    order = await in_payment(gateway, number, token)
    response = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "payments_attributes": [{"payment_method_id": 2, "source_attributes": CARD}]}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["state"] == "confirm"
    [payment] = body["payments"]
    assert payment["amount"] == order["total"] and payment["state"] == "checkout"
    assert payment["source"]["last_digits"] == "1111" and payment["source"]["cc_type"] == "visa"
    assert "number" not in payment["source"]
    # In confirm there is nothing to update and `next` has no transition (use /complete).
    stuck = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {}})
    assert stuck.status_code == 422 and stuck.json()["errors"] == {}


async def test_card_errors_through_update_checkout_use_nested_keys(gateway, guest_order):
    number, token = guest_order
    await in_payment(gateway, number, token)
    response = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "payments_attributes": [{"payment_method_id": 2, "source_attributes": {**CARD, "verification_value": ""}}]}})
    assert response.status_code == 422
    assert response.json()["errors"] == {"payments.Credit Card": ["Verification Value can't be blank"]}
    missing = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "payments_attributes": [{"payment_method_id": 2}]}})
    assert missing.json()["errors"] == {"payments.source": ["can't be blank"]}
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "payment" and order["payments"] == []  # refused: nothing was created
