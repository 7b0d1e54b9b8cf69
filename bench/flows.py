"""The checkout flows a storefront drives, timed per request (bench/run.py runs them).

The load generator shares the machine with the system, so it uses aiohttp, the cheaper
client per request."""
from __future__ import annotations

import json
import time
from collections import defaultdict

import aiohttp

ADDRESS = {"name": "Ada Lovelace", "address1": "1 Main St", "city": "Portland", "zipcode": "97201",
           "phone": "555-0100", "country_iso": "US", "state_name": "OR"}
CARD = {"number": "4111111111111111", "month": 12, "year": 2030, "verification_value": "123", "name": "A B"}
UK = {"firstname": "Ada", "lastname": "Lovelace", "address": "1 High St", "city": "Chelmsford", "county": "Essex",
      "zip": "CM2 5TH", "country": "United Kingdom"}


class FlowFailed(Exception):
    pass


class Timings:
    def __init__(self) -> None:
        self.requests: dict[str, list[float]] = defaultdict(list)

    async def call(self, client: aiohttp.ClientSession, label: str, method: str, url: str, expect: int = 200,
                   **kwargs) -> dict:
        started = time.perf_counter()
        async with client.request(method, url, **kwargs) as response:
            content = await response.read()
        self.requests[label].append(time.perf_counter() - started)
        if response.status != expect:
            raise FlowFailed(f"{label}: {response.status} {content[:200].decode(errors='replace')}")
        return json.loads(content) if content else {}


async def solidus_flow(client: aiohttp.ClientSession, timings: Timings) -> None:
    """Create order, 2 line items, next, addresses, rate, coupon, next, card payment, next, complete."""
    order = await timings.call(client, "POST /orders", "POST", "/api/orders", 201, json={})
    n, h = order["number"], {"X-Spree-Order-Token": order["token"]}
    for variant in (1, 3):
        await timings.call(client, "POST line_items", "POST", f"/api/checkouts/{n}/line_items", 201, headers=h,
                           json={"line_item": {"variant_id": variant, "quantity": 1}})
    await timings.call(client, "PUT next (cart)", "PUT", f"/api/checkouts/{n}/next", headers=h)
    delivery = await timings.call(client, "PATCH checkout (address)", "PATCH", f"/api/checkouts/{n}", headers=h,
                                  json={"order": {"email": "bench@example.com", "bill_address_attributes": ADDRESS,
                                                  "ship_address_attributes": ADDRESS}})
    if not delivery.get("shipments"):  # the delivery was not answered within the request's wait
        raise FlowFailed(f"PATCH checkout (address): no shipments yet, state {delivery.get('state')}")
    shipment = delivery["shipments"][0]
    express = shipment["shipping_rates"][-1]
    await timings.call(client, "PUT select_shipping_method", "PUT",
                       f"/api/shipments/{shipment['number']}/select_shipping_method", headers=h,
                       json={"shipping_method_id": express["shipping_method_id"]})
    await timings.call(client, "POST coupon_codes", "POST", f"/api/orders/{n}/coupon_codes", headers=h,
                       json={"coupon_code": "10off"})
    await timings.call(client, "PUT next (delivery)", "PUT", f"/api/checkouts/{n}/next", headers=h)
    await timings.call(client, "PATCH checkout (payment)", "PATCH", f"/api/checkouts/{n}", headers=h,
                       json={"order": {"payments_attributes": [{"payment_method_id": 2, "source_attributes": CARD}]}})
    done = await timings.call(client, "PUT complete", "PUT", f"/api/checkouts/{n}/complete", headers=h)
    if done["state"] != "complete":
        raise FlowFailed(f"order {n} ended {done['state']}")


async def getcandy_flow(client: aiohttp.ClientSession, timings: Timings, variant_hash: str) -> None:
    """Basket lines, order, shipping address, methods, cost, contact, billing, process."""
    basket = await timings.call(client, "POST basket-lines", "POST", "/api/v1/basket-lines",
                                json={"variants": [{"id": variant_hash, "quantity": 2}]})
    order = await timings.call(client, "POST orders", "POST", "/api/v1/orders",
                               json={"basket_id": basket["data"]["id"]})
    o = order["data"]["id"]
    await timings.call(client, "PUT shipping/address", "PUT", f"/api/v1/orders/{o}/shipping/address", json=UK)
    methods = await timings.call(client, "GET shipping/methods", "GET", f"/api/v1/orders/{o}/shipping/methods")
    await timings.call(client, "PUT shipping/cost", "PUT", f"/api/v1/orders/{o}/shipping/cost",
                       json={"price_id": methods["data"][0]["id"]})
    await timings.call(client, "PUT contact", "PUT", f"/api/v1/orders/{o}/contact", json={"email": "b@example.com"})
    await timings.call(client, "PUT billing/address", "PUT", f"/api/v1/orders/{o}/billing/address", json=UK)
    done = await timings.call(client, "POST orders/process", "POST", "/api/v1/orders/process",
                              json={"order_id": o, "payment_token": "OFFLINE"})
    if not done["data"]["placed_at"]:
        raise FlowFailed(f"order {o} was not placed")
