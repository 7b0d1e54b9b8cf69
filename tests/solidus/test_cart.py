"""Solidus acceptance checks (research §12) for orders, line items and coupons, over HTTP
against the running services. Numbers refer to the checks in solidus-api.md §12."""
from __future__ import annotations

import asyncio
import re

import pytest

from tests.helpers.solidus import ADMIN, V1

# The same tests against both topologies (tests/conftest.py).
pytestmark = pytest.mark.both_topologies


async def test_2_guest_creates_an_empty_order(gateway):
    response = await gateway.post("/api/orders", json={})
    assert response.status_code == 201
    body = response.json()
    assert body["state"] == "cart" and re.fullmatch(r"R\d{9}", body["number"])
    assert len(body["token"]) == 22
    assert body["total"] == "0.0" and body["payment_state"] is None
    assert body["checkout_steps"] == ["address", "delivery", "confirm", "complete"]
    assert body["line_items"] == [] and body["email"] is None


async def test_3_an_order_is_shown_only_with_its_token(gateway, guest_order):
    number, token = guest_order
    denied = await gateway.get(f"/api/orders/{number}")
    assert denied.status_code == 401
    assert denied.json() == {"error": "You are not authorized to perform that action."}
    wrong = await gateway.get(f"/api/orders/{number}", headers={"X-Spree-Order-Token": "nope"})
    assert wrong.status_code == 401
    shown = await gateway.get(f"/api/orders/{number}", headers=token)
    assert shown.status_code == 200 and shown.json()["number"] == number
    by_param = await gateway.get(f"/api/orders/{number}", params={"order_token": token["X-Spree-Order-Token"]})
    assert by_param.status_code == 200


async def test_4_unknown_order_with_admin_key_is_404_and_a_bad_key_is_401(gateway):
    response = await gateway.get("/api/orders/R000000000", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"error": "The resource you were looking for could not be found."}
    bad = await gateway.get("/api/orders/R000000000", headers={"Authorization": "Bearer abc"})
    # The key is not echoed back: a key is a secret.
    assert bad.status_code == 401 and bad.json() == {"error": "Invalid API key specified."}
    # A token for a nonexistent order is refused like a wrong token.
    assert (await gateway.get("/api/orders/R000000000", headers={"X-Spree-Order-Token": "x"})).status_code == 401


async def test_5_adding_a_variant_twice_increments_its_line(gateway, guest_order):
    number, token = guest_order
    first = await gateway.post(f"/api/checkouts/{number}/line_items",
                               json={"line_item": {"variant_id": V1, "quantity": 2}}, headers=token)
    assert first.status_code == 201, first.text
    line = first.json()
    assert line["quantity"] == 2 and line["price"] == "19.99" and line["total"] == "39.98"
    assert line["variant"]["id"] == V1 and line["display_amount"] == "$39.98"
    again = await gateway.post(f"/api/orders/{number}/line_items",
                               json={"line_item": {"variant_id": V1, "quantity": 1}}, headers=token)
    assert again.status_code == 201 and again.json()["quantity"] == 3 and again.json()["id"] == line["id"]
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["item_total"] == "59.97" and order["total"] == "59.97" and order["total_quantity"] == 3


async def test_6_an_unknown_variant_is_404(gateway, guest_order):
    number, token = guest_order
    for variant_id in (999999, "abc", None, -1, 2**40):
        response = await gateway.post(f"/api/checkouts/{number}/line_items",
                                      json={"line_item": {"variant_id": variant_id}}, headers=token)
        assert response.status_code == 404, variant_id
        assert response.json() == {"error": "The resource you were looking for could not be found."}


async def test_7_patch_sets_the_quantity_and_the_order_reflects_it_at_once(gateway, guest_order):
    number, token = guest_order
    line = (await gateway.post(f"/api/checkouts/{number}/line_items",
                               json={"line_item": {"variant_id": V1, "quantity": 2}}, headers=token)).json()
    patched = await gateway.patch(f"/api/checkouts/{number}/line_items/{line['id']}",
                                  json={"line_item": {"quantity": 1}}, headers=token)
    assert patched.status_code == 200 and patched.json()["quantity"] == 1
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()  # no sleep: read-your-writes
    assert order["item_total"] == "19.99" and order["total_quantity"] == 1


async def test_bad_quantities_and_bodies_get_4xx_never_500(gateway, guest_order):
    number, token = guest_order
    url = f"/api/checkouts/{number}/line_items"
    for quantity, message in ((-1, "must be greater than 0"), (0, "must be greater than 0"),
                              ("two", "is not a number"), (10**9, "must be less than or equal to 10000"),
                              (1.5, "is not a number")):
        response = await gateway.post(url, json={"line_item": {"variant_id": V1, "quantity": quantity}},
                                      headers=token)
        assert response.status_code == 422, (quantity, response.text)
        assert response.json() == {"error": "Invalid resource. Please fix errors and try again.",
                                   "errors": {"quantity": [message]}}
    missing = await gateway.post(url, json={}, headers=token)
    assert missing.status_code == 422 and missing.json()["missing_param"] == "line_item"
    malformed = await gateway.post(url, content=b"{nope", headers={**token, "Content-Type": "application/json"})
    assert malformed.status_code == 400 and "error" in malformed.json()
    form = await gateway.post(url, data={"line_item[variant_id]": str(V1), "line_item[quantity]": "2"},
                              headers=token)
    assert form.status_code == 201 and form.json()["quantity"] == 2
    assert (await gateway.patch(f"{url}/999999", json={"line_item": {"quantity": 1}}, headers=token)).status_code == 404
    assert (await gateway.patch(f"{url}/abc", json={"line_item": {"quantity": 1}}, headers=token)).status_code == 404
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["total_quantity"] == 2  # the refused requests changed nothing


async def test_20_parallel_adds_of_one_variant_all_succeed(gateway, guest_order):
    number, token = guest_order
    responses = await asyncio.gather(*(
        gateway.post(f"/api/checkouts/{number}/line_items", json={"line_item": {"variant_id": V1, "quantity": 1}},
                     headers=token) for _ in range(20)))
    assert [r.status_code for r in responses] == [201] * 20  # no 409, unlike Solidus
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert len(order["line_items"]) == 1 and order["line_items"][0]["quantity"] == 20
    assert order["item_total"] == "399.8"


async def test_15_16_coupon_codes(gateway, guest_order):
    number, token = guest_order
    await gateway.post(f"/api/checkouts/{number}/line_items",
                       json={"line_item": {"variant_id": V1, "quantity": 2}}, headers=token)
    url = f"/api/orders/{number}/coupon_codes"
    nope = await gateway.post(url, json={"coupon_code": "NOPE"}, headers=token)
    assert nope.status_code == 422
    assert nope.json() == {"success": None, "error": "The coupon code you entered doesn't exist. Please try again.",
                           "successful": False, "status_code": "coupon_code_not_found"}
    applied = await gateway.post(url, json={"coupon_code": " 10OFF "}, headers=token)
    assert applied.status_code == 200
    assert applied.json() == {"success": "The coupon code was successfully applied to your order.", "error": None,
                              "successful": True, "status_code": "coupon_code_applied"}
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["adjustment_total"] == "-10.0" and order["total"] == "29.98"
    assert order["adjustments"][0]["label"] == "Promotion (10 off)" and order["adjustments"][0]["amount"] == "-10.0"
    again = await gateway.post(url, json={"coupon_code": "10off"}, headers=token)
    assert again.status_code == 422 and again.json()["status_code"] == "coupon_code_already_applied"
    expired = await gateway.post(url, json={"coupon_code": "summer2020"}, headers=token)
    assert expired.json()["status_code"] == "coupon_code_expired"
    blank = await gateway.post(url, json={"coupon_code": ""}, headers=token)
    assert blank.status_code == 422 and blank.json() == {"success": None, "error": None, "successful": False,
                                                         "status_code": None}
    removed = await gateway.delete(f"{url}/10off", headers=token)
    assert removed.status_code == 200 and removed.json()["status_code"] == "coupon_code_removed"
    not_present = await gateway.delete(f"{url}/10off", headers=token)
    assert not_present.status_code == 422 and not_present.json()["status_code"] == "coupon_code_not_present"
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["adjustment_total"] == "0.0" and order["total"] == "39.98"


async def test_percent_coupon_follows_the_items(gateway, guest_order):
    number, token = guest_order
    line = (await gateway.post(f"/api/checkouts/{number}/line_items",
                               json={"line_item": {"variant_id": V1, "quantity": 2}}, headers=token)).json()
    await gateway.post(f"/api/orders/{number}/coupon_codes", json={"coupon_code": "15percent"}, headers=token)
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["adjustment_total"] == "-6.0" and order["total"] == "33.98"  # 15% of 39.98 = 5.997
    await gateway.patch(f"/api/checkouts/{number}/line_items/{line['id']}", json={"line_item": {"quantity": 4}},
                        headers=token)
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["item_total"] == "79.96" and order["adjustment_total"] == "-11.99"


async def test_25_delete_and_empty(gateway, guest_order):
    number, token = guest_order
    line = (await gateway.post(f"/api/checkouts/{number}/line_items",
                               json={"line_item": {"variant_id": V1, "quantity": 1}}, headers=token)).json()
    deleted = await gateway.delete(f"/api/checkouts/{number}/line_items/{line['id']}", headers=token)
    assert deleted.status_code == 204 and deleted.content == b""
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "cart" and order["total"] == "0.0" and order["line_items"] == []
    assert (await gateway.delete(f"/api/checkouts/{number}/line_items/{line['id']}", headers=token)).status_code == 404
    await gateway.post(f"/api/checkouts/{number}/line_items", json={"line_item": {"variant_id": 3, "quantity": 2}},
                       headers=token)
    emptied = await gateway.put(f"/api/orders/{number}/empty", headers=token)
    assert emptied.status_code == 200
    assert emptied.json()["line_items"] == [] and emptied.json()["state"] == "cart"
    assert emptied.json()["item_total"] == "0.0"


async def test_catalog_reads(gateway):
    variants = (await gateway.get("/api/variants")).json()
    assert {"id": V1, "price": "19.99"}.items() <= variants["variants"][0].items()
    products = (await gateway.get("/api/products")).json()["products"]
    shirt = next(p for p in products if p["slug"] == "solidus-t-shirt")
    assert [v["id"] for v in shirt["variants"]] == [1, 2] and shirt["price"] == "19.99"
