"""GetCandy's checkout over HTTP for the tests: variant V (950, priced 10.00 GBP, loaded by
the `getcandy_data` fixture of tests/conftest.py), a UK address, a basket, and an order
ready to process."""
from __future__ import annotations

from hashids import Hashids

MAIN = Hashids(salt="main", min_length=8, alphabet="abcdefghijklmnopqrstuvwxyz0123456789")
V_ID = 950
V = MAIN.encode(V_ID)
UK = {"firstname": "Ada", "lastname": "Lovelace", "address": "1 High St", "city": "Chelmsford",
      "county": "Essex", "zip": "CM2 5TH", "country": "United Kingdom", "phone": "01245 000000"}


def stock_v(system, count_on_hand: int) -> None:
    """Variant V's stock at the Main Warehouse, set to `count_on_hand`."""
    system.call("shipping", "load_reference", stock_locations=[
        {"id": 1, "name": "Main Warehouse", "stock": [{"variant_id": V_ID, "count_on_hand": count_on_hand}]}])


async def basket(gateway, quantity=2) -> dict:
    response = await gateway.post("/api/v1/basket-lines", json={"variants": [{"id": V, "quantity": quantity}]})
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def placed_ready_order(gateway, quantity=2) -> str:
    """Basket → order → shipping address, method, cost, contact and billing: ready to process."""
    b = await basket(gateway, quantity)
    order = (await gateway.post("/api/v1/orders", json={"basket_id": b["id"]})).json()["data"]
    o = order["id"]
    assert (await gateway.put(f"/api/v1/orders/{o}/shipping/address", json=UK)).status_code == 200
    methods = (await gateway.get(f"/api/v1/orders/{o}/shipping/methods")).json()["data"]
    assert (await gateway.put(f"/api/v1/orders/{o}/shipping/cost",
                              json={"price_id": methods[0]["id"]})).status_code == 200
    assert (await gateway.put(f"/api/v1/orders/{o}/contact", json={"email": "a@b.com"})).status_code == 200
    assert (await gateway.put(f"/api/v1/orders/{o}/billing/address", json=UK)).status_code == 200
    return o
