"""Issue #23, 7: a flat promotion is money of one currency. Over real HTTP, in both dialects
and both topologies: a flat coupon defined in one currency is refused (the dialect's coupon
refusal) by an order in another, and leaves its totals as they were; a percentage fits any."""
from __future__ import annotations

import time

import pytest
from hashids import Hashids

pytestmark = pytest.mark.both_topologies

MAIN = Hashids(salt="main", min_length=8, alphabet="abcdefghijklmnopqrstuvwxyz0123456789")
TEE = 1  # demo variant: 19.99 in USD and in GBP


@pytest.fixture
def flat_coupon(system):
    def make(currency: str, value: str = "5.00") -> str:
        promotion_id = 200_000 + time.monotonic_ns() % 1_000_000_000
        code = f"flat{currency.lower()}{promotion_id}"
        system.call("cart", "load_promotions", promotions=[{
            "id": promotion_id, "name": code, "code": code, "kind": "order_flat", "value": value,
            "currency": currency}])
        return code
    return make


async def test_a_usd_flat_coupon_does_not_discount_a_gbp_basket(gateway, flat_coupon):
    lines = {"variants": [{"id": MAIN.encode(TEE), "quantity": 1}]}
    basket = (await gateway.post("/api/v1/basket-lines", json=lines)).json()["data"]
    assert basket["total"] > 0
    refused = await gateway.put(f"/api/v1/baskets/{basket['id']}/discounts", json={"coupon": "10off"})
    assert refused.status_code == 422, refused.text
    assert refused.json() == {"coupon": ["The coupon is either invalid, expired or cannot be used"]}
    unchanged = (await gateway.get(f"/api/v1/baskets/{basket['id']}")).json()["data"]
    assert (unchanged["total"], unchanged["discount_total"]) == (basket["total"], 0)

    applied = await gateway.put(f"/api/v1/baskets/{basket['id']}/discounts", json={"coupon": flat_coupon("GBP")})
    assert applied.status_code == 200, applied.text
    assert applied.json()["data"]["discount_total"] == 5.0
    percent = await gateway.put(f"/api/v1/baskets/{basket['id']}/discounts", json={"coupon": "15percent"})
    assert percent.status_code == 200, percent.text


async def test_a_gbp_flat_coupon_does_not_discount_a_usd_order(gateway, guest_order, flat_coupon):
    number, token = guest_order
    added = await gateway.post(f"/api/checkouts/{number}/line_items", headers=token,
                               json={"line_item": {"variant_id": TEE, "quantity": 1}})
    assert added.status_code == 201, added.text
    refused = await gateway.post(f"/api/orders/{number}/coupon_codes", headers=token,
                                 json={"coupon_code": flat_coupon("GBP")})
    assert refused.status_code == 422, refused.text
    assert refused.json() == {"success": None, "error": "This coupon code is not eligible for this order",
                              "successful": False, "status_code": "coupon_code_not_eligible"}
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert (order["total"], order["adjustment_total"]) == ("19.99", "0.0")

    for code in (flat_coupon("USD"), "15percent"):
        applied = await gateway.post(f"/api/orders/{number}/coupon_codes", headers=token, json={"coupon_code": code})
        assert applied.status_code == 200, applied.text
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["adjustment_total"] != "0.0"
