"""Solidus's checkout over HTTP for the tests: the demo variant, an address and a card
Solidus accepts, the steps to `confirm` (and `complete`), and the stock a variant has left."""
from __future__ import annotations

import asyncio
import time

import asyncpg

V1 = 1  # demo variant priced 19.99
ADMIN = {"Authorization": "Bearer test-admin-key"}
ADDRESS = {"name": "Ada Lovelace", "address1": "1 Main St", "city": "Portland", "zipcode": "97201",
           "phone": "555-0100", "country_iso": "US", "state_name": "OR"}


async def in_address(gateway, number, token, variant_id=V1, quantity=1):
    await gateway.post(f"/api/checkouts/{number}/line_items",
                       json={"line_item": {"variant_id": variant_id, "quantity": quantity}}, headers=token)
    response = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    assert response.status_code == 200 and response.json()["state"] == "address", response.text


async def in_delivery(gateway, number, token, **kwargs):
    await in_address(gateway, number, token, **kwargs)
    response = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "email": "ada@example.com", "bill_address_attributes": ADDRESS, "ship_address_attributes": ADDRESS}})
    assert response.status_code == 200, response.text
    return response.json()


CARD = {"number": "4111111111111111", "month": 12, "year": 2030, "verification_value": "123", "name": "A B"}


async def in_payment(gateway, number, token):
    await in_delivery(gateway, number, token)
    response = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    assert response.status_code == 200 and response.json()["state"] == "payment", response.text
    return response.json()


async def full_flow(gateway, *, card: dict | None, variant_id=V1, quantity=1, coupon: str | None = "10off",
                    complete: bool = True):
    """Every step of the seed document, with no sleeps (stopping in confirm if not `complete`)."""
    created = await gateway.post("/api/orders", json={})
    assert created.status_code == 201
    number, token = created.json()["number"], {"X-Spree-Order-Token": created.json()["token"]}
    add = await gateway.post(f"/api/checkouts/{number}/line_items",
                             json={"line_item": {"variant_id": variant_id, "quantity": quantity}}, headers=token)
    assert add.status_code == 201, add.text
    if coupon:
        assert (await gateway.post(f"/api/orders/{number}/coupon_codes", json={"coupon_code": coupon},
                                   headers=token)).status_code == 200
    assert (await gateway.put(f"/api/checkouts/{number}/next", headers=token)).json()["state"] == "address"
    delivery = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "email": "ada@example.com", "bill_address_attributes": ADDRESS, "ship_address_attributes": ADDRESS}})
    assert delivery.status_code == 200, delivery.text
    shipment = delivery.json()["shipments"][0]
    rates = (await gateway.get(f"/api/shipments/{shipment['number']}/estimated_rates", headers=token)).json()
    assert len(rates["shipping_rates"]) == 2
    chosen = await gateway.put(f"/api/shipments/{shipment['number']}/select_shipping_method", headers=token,
                               json={"shipping_method_id": rates["shipping_rates"][0]["shipping_method_id"]})
    assert chosen.status_code == 200
    payment_step = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    assert payment_step.json()["state"] == "payment"
    total = payment_step.json()["total"]
    if card is None:
        paid = await gateway.post(f"/api/orders/{number}/payments", headers=token,
                                  json={"payment": {"payment_method_id": 1, "amount": total}})
        assert paid.status_code == 201
        confirm = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    else:
        confirm = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
            "payments_attributes": [{"payment_method_id": 2, "source_attributes": card}]}})
    assert confirm.status_code == 200 and confirm.json()["state"] == "confirm", confirm.text
    if not complete:
        return number, token, total, None
    completed = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    return number, token, total, completed


async def stock_is(stack, variant_id: int, expected: int) -> bool:
    return await stock_of(stack, variant_id) == expected


async def stock_of(stack, variant_id: int) -> int:
    conn = await asyncpg.connect(stack.database_url)
    try:
        return await conn.fetchval("SELECT sum(count_on_hand) FROM shipping.stock_items WHERE variant_id = $1",
                                   variant_id)
    finally:
        await conn.close()


async def wait_for(predicate, timeout: float = 15) -> None:
    """Until `await predicate()` holds; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
