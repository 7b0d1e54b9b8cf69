"""Stock as Solidus shows and takes it (issue #18): variants with their stock, orders split
over two stock locations, backorders, discarded variants. Over HTTP, in Solidus's shapes.

Each test brings variants of its own (ids 950+), stocked at the demo data's two locations:
1 "Main Warehouse" and 2 "East Coast Depot"."""
from __future__ import annotations

import asyncio
import time

import asyncpg

from tests.helpers.solidus import ADDRESS, ADMIN, CARD, stock_of


async def catalog(system, *variants: dict) -> None:
    """Variants (each a product of its own) priced 5.00 (GBP 4.00), and their stock:
    `{"id", "track_inventory"?, "stock": {location: (count, backorderable)}}`."""
    await system.acall("cart", "load_catalog", products=[
        {"id": v["id"], "name": f"Stocked {v['id']}", "slug": f"stocked-{v['id']}",
         "variants": [{"id": v["id"], "sku": f"STOCKED-{v['id']}", "name": f"Stocked {v['id']}", "is_master": True,
                       "track_inventory": v.get("track_inventory", True), "prices": {"USD": "5.00", "GBP": "4.00"}}]}
        for v in variants])
    for location, name in ((1, "Main Warehouse"), (2, "East Coast Depot")):
        stock = [{"variant_id": v["id"], "count_on_hand": v["stock"][location][0],
                  "backorderable": v["stock"][location][1]} for v in variants if location in v.get("stock", {})]
        if stock:
            await system.acall("shipping", "load_reference", stock_locations=[
                {"id": location, "name": name, "stock": stock}])


async def in_delivery(gateway, variant_id: int, quantity: int) -> tuple[str, dict, dict]:
    created = (await gateway.post("/api/orders", json={})).json()
    number, token = created["number"], {"X-Spree-Order-Token": created["token"]}
    added = await gateway.post(f"/api/checkouts/{number}/line_items",
                               json={"line_item": {"variant_id": variant_id, "quantity": quantity}}, headers=token)
    assert added.status_code == 201, added.text
    assert (await gateway.put(f"/api/checkouts/{number}/next", headers=token)).status_code == 200
    delivery = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "email": "ada@example.com", "bill_address_attributes": ADDRESS, "ship_address_attributes": ADDRESS}})
    assert delivery.status_code == 200 and delivery.json()["state"] == "delivery", delivery.text
    return number, token, delivery.json()


async def in_confirm(gateway, number: str, token: dict) -> dict:
    payment = await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    assert payment.json()["state"] == "payment", payment.text
    confirm = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "payments_attributes": [{"payment_method_id": 2, "source_attributes": CARD}]}})
    assert confirm.status_code == 200 and confirm.json()["state"] == "confirm", confirm.text
    return confirm.json()


async def listed(gateway, variant_id: int, headers=None, **params) -> dict | None:
    """The variant as GET /api/variants lists it (None: not listed)."""
    variants = (await gateway.get("/api/variants", params=params, headers=headers)).json()["variants"]
    return next((v for v in variants if v["id"] == variant_id), None)


async def variant_shown(gateway, variant_id: int, until=lambda v: True) -> dict:
    """The variant as listed once `until` holds: the stock shown may be up to
    STOCK_DISPLAY_MAX_AGE_MS (1 s) old."""
    deadline = time.monotonic() + 10
    while not until(variant := await listed(gateway, variant_id)):
        assert time.monotonic() < deadline, variant
        await asyncio.sleep(0.2)
    return variant


async def test_variants_carry_their_stock_in_both_dialects(gateway, system):
    await catalog(system, {"id": 950, "stock": {1: (4, False), 2: (3, False)}},
                  {"id": 951, "stock": {1: (0, True)}},
                  {"id": 952, "track_inventory": False},
                  {"id": 953, "stock": {1: (0, False)}})
    shown = {v: await variant_shown(gateway, v) for v in (950, 951, 952, 953)}
    stock = {v: (s["total_on_hand"], s["in_stock"], s["is_backorderable"], s["track_inventory"], s["is_destroyed"])
             for v, s in shown.items()}
    assert stock == {950: (7, True, False, True, False),     # over both locations
                     951: (0, True, True, True, False),      # none on hand, but backorderable
                     952: (None, True, False, False, False),  # not tracked: unlimited (Solidus's Infinity)
                     953: (0, False, False, True, False)}    # sold out
    in_stock_only = (await gateway.get("/api/variants", params={"in_stock_only": "true"})).json()["variants"]
    assert {950, 951, 952} <= {v["id"] for v in in_stock_only} and 953 not in {v["id"] for v in in_stock_only}

    # The show is Solidus's "big" variant: its stock items, location by location.
    show = await gateway.get("/api/variants/950")
    assert show.status_code == 200 and show.json()["total_on_hand"] == 7
    assert [(i["stock_location_name"], i["count_on_hand"], i["backorderable"], i["available"])
            for i in show.json()["stock_items"]] == [("Main Warehouse", 4, False, True),
                                                     ("East Coast Depot", 3, False, True)]
    assert all(isinstance(i["id"], int) for i in show.json()["stock_items"])
    assert (await gateway.get("/api/variants/999999")).status_code == 404

    # Inside an order's line items too.
    number, token, order = await in_delivery(gateway, 950, 1)
    assert order["line_items"][0]["variant"]["total_on_hand"] == 7

    # GetCandy shows the same stock on its variants.
    products = (await gateway.get("/api/v1/products", params={"include": "variants"})).json()["data"]
    candy = {p["name"]: p["variants"]["data"][0] for p in products}
    assert (candy["Stocked 950"]["inventory"], candy["Stocked 950"]["backorder"]) == (7, "in-stock")
    assert (candy["Stocked 951"]["inventory"], candy["Stocked 951"]["backorder"]) == (0, "always")
    assert (candy["Stocked 952"]["inventory"], candy["Stocked 952"]["backorder"]) == (None, "always")


async def test_an_order_one_location_cannot_fill_ships_from_two(gateway, system, stack):
    await catalog(system, {"id": 955, "stock": {1: (2, False), 2: (10, False)}})
    number, token, order = await in_delivery(gateway, 955, 5)
    # On hand first at the first location, the rest from the second: two shipments, each rated.
    shipments = order["shipments"]
    assert [(s["stock_location_name"], s["manifest"]) for s in shipments] == [
        ("Main Warehouse", [{"variant_id": 955, "quantity": 2, "states": {"on_hand": 2}}]),
        ("East Coast Depot", [{"variant_id": 955, "quantity": 3, "states": {"on_hand": 3}}])]
    assert order["ship_total"] == "20.0"  # Ground, 10.00 a shipment
    await in_confirm(gateway, number, token)
    complete = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert complete.status_code == 200, complete.text
    assert complete.json()["state"] == "complete" and complete.json()["total"] == "45.0"
    conn = await asyncpg.connect(stack.database_url)
    try:
        by_location = dict(await conn.fetch("SELECT stock_location_id, count_on_hand FROM shipping.stock_items"
                                            " WHERE variant_id = 955"))
    finally:
        await conn.close()
    assert by_location == {1: 0, 2: 7}
    shown = await variant_shown(gateway, 955, lambda v: v["total_on_hand"] == 7)
    assert shown["total_on_hand"] == 7


async def test_backorderable_stock_sells_beyond_its_count_and_the_order_is_backordered(gateway, system, stack):
    await catalog(system, {"id": 956, "stock": {1: (1, True)}})
    number, token, order = await in_delivery(gateway, 956, 3)
    # One unit on hand, two on backorder: Solidus packs them apart.
    assert [(s["stock_location_name"], s["manifest"]) for s in order["shipments"]] == [
        ("Main Warehouse", [{"variant_id": 956, "quantity": 1, "states": {"on_hand": 1}}]),
        ("Main Warehouse", [{"variant_id": 956, "quantity": 2, "states": {"backordered": 2}}])]
    await in_confirm(gateway, number, token)
    complete = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert complete.status_code == 200, complete.text
    placed = complete.json()
    assert placed["state"] == "complete" and placed["shipment_state"] == "backorder"
    assert [s["state"] for s in placed["shipments"]] == ["pending", "pending"]  # authorised, not paid yet
    assert await stock_of(stack, 956) == -2  # Solidus's count goes below zero
    shown = await variant_shown(gateway, 956, lambda v: v["total_on_hand"] == -2)
    assert (shown["total_on_hand"], shown["in_stock"]) == (-2, True)
    # Captured, the on-hand shipment is ready; the order stays backordered.
    payment_id = placed["payments"][0]["id"]
    captured = await gateway.put(f"/api/orders/{number}/payments/{payment_id}/capture", headers=ADMIN)
    assert captured.status_code == 200, captured.text
    deadline = time.monotonic() + 10
    while (order := (await gateway.get(f"/api/orders/{number}", headers=token)).json())["payment_state"] != "paid":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert order["shipment_state"] == "backorder"
    assert [s["state"] for s in order["shipments"]] == ["ready", "pending"]
    # Canceled, every unit goes back.
    assert (await gateway.put(f"/api/orders/{number}/cancel", headers=ADMIN)).status_code == 200
    deadline = time.monotonic() + 10
    while await stock_of(stack, 956) != 1:
        assert time.monotonic() < deadline, "the canceled order's units were not put back"
        await asyncio.sleep(0.1)


async def test_backordered_stock_that_came_in_meanwhile_ships_from_hand(gateway, system, stack):
    """The shipments say what was planned at delivery; completing takes what is on hand now."""
    await catalog(system, {"id": 957, "stock": {1: (0, True)}})
    number, token, order = await in_delivery(gateway, 957, 2)
    assert order["shipments"][0]["manifest"][0]["states"] == {"backordered": 2}
    await catalog(system, {"id": 957, "stock": {1: (5, True)}})  # a delivery came in
    await in_confirm(gateway, number, token)
    complete = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert complete.status_code == 200, complete.text
    assert complete.json()["shipment_state"] == "pending"
    assert complete.json()["shipments"][0]["manifest"][0]["states"] == {"on_hand": 2}
    assert await stock_of(stack, 957) == 3


async def test_a_planned_location_sold_out_meanwhile_refuses_the_completion(gateway, system, stack):
    await catalog(system, {"id": 958, "stock": {1: (1, False), 2: (5, False)}})
    number, token, order = await in_delivery(gateway, 958, 1)
    assert order["shipments"][0]["stock_location_name"] == "Main Warehouse"
    await catalog(system, {"id": 958, "stock": {1: (0, False), 2: (5, False)}})
    await in_confirm(gateway, number, token)
    complete = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert complete.status_code == 422
    assert complete.json() == {"errors": ["Quantity is not available for items in your order"],
                               "type": "insufficient_stock"}
    assert await stock_of(stack, 958) == 5  # nothing was taken, nowhere


async def test_a_discarded_variant_is_no_longer_sold_and_its_orders_cannot_complete(gateway, system, stack):
    await catalog(system, {"id": 959, "stock": {1: (10, False)}})
    number, token, order = await in_delivery(gateway, 959, 1)
    await in_confirm(gateway, number, token)

    assert (await gateway.delete("/api/variants/959")).status_code == 401  # admins only
    assert (await gateway.delete("/api/variants/999999", headers=ADMIN)).status_code == 404
    discarded = await gateway.delete("/api/products/959/variants/959", headers=ADMIN)
    assert discarded.status_code == 204
    assert (await gateway.delete("/api/variants/959", headers=ADMIN)).status_code == 204  # again: no change

    assert await listed(gateway, 959) is None
    assert (await gateway.get("/api/variants/959")).status_code == 404
    assert await listed(gateway, 959, show_deleted="true") is None  # `show_deleted` is for admins
    assert (await listed(gateway, 959, headers=ADMIN, show_deleted="true"))["is_destroyed"] is True
    other, other_token = (lambda o: (o["number"], {"X-Spree-Order-Token": o["token"]}))(
        (await gateway.post("/api/orders", json={})).json())
    add = await gateway.post(f"/api/checkouts/{other}/line_items",
                             json={"line_item": {"variant_id": 959, "quantity": 1}}, headers=other_token)
    assert add.status_code == 404

    complete = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
    assert complete.status_code == 422
    assert complete.json()["errors"] == {
        "base": ["Some line items in this order have products that are no longer available."]}
    order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert order["state"] == "address" and order["completed_at"] is None  # the checkout restarts
    deadline = time.monotonic() + 10  # shown within STOCK_DISPLAY_MAX_AGE_MS by every gateway
    while not order["line_items"][0]["variant"]["is_destroyed"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
        order = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert await stock_of(stack, 959) == 10


async def test_stock_that_is_not_backorderable_still_refuses_delivery(gateway, system):
    await catalog(system, {"id": 960, "stock": {1: (4, False), 2: (6, False)}})
    created = (await gateway.post("/api/orders", json={})).json()
    number, token = created["number"], {"X-Spree-Order-Token": created["token"]}
    await gateway.post(f"/api/checkouts/{number}/line_items",
                       json={"line_item": {"variant_id": 960, "quantity": 11}}, headers=token)
    await gateway.put(f"/api/checkouts/{number}/next", headers=token)
    delivery = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
        "email": "ada@example.com", "bill_address_attributes": ADDRESS, "ship_address_attributes": ADDRESS}})
    assert delivery.status_code == 422
    assert delivery.json()["type"] == "insufficient_stock"
