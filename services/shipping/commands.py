"""Application handlers of the shipping service: reference data in, OrderShipments out."""
from __future__ import annotations

from decimal import Decimal

import asyncpg

from shared.aggregate import CommandResult, Repository
from shared.bus import events_topic
from shared.contracts.order import DeliveryRequested
from shared.eventstore import EventStore
from services.shipping.domain import Line, Method, OrderShipments, StockLocation

SHIPPING_STORE = EventStore("shipping", events_topic("shipping"))
SHIPMENTS = Repository(SHIPPING_STORE, OrderShipments)


async def active_locations(conn: asyncpg.Connection | asyncpg.Pool) -> list[StockLocation]:
    locations = await conn.fetch("SELECT id, name FROM stock_locations WHERE active ORDER BY id")
    items = await conn.fetch("SELECT stock_location_id, variant_id, count_on_hand, backorderable FROM stock_items")
    return [StockLocation(
        id=loc["id"], name=loc["name"],
        on_hand={i["variant_id"]: i["count_on_hand"] for i in items if i["stock_location_id"] == loc["id"]},
        backorderable=frozenset(i["variant_id"] for i in items
                                if i["stock_location_id"] == loc["id"] and i["backorderable"]))
        for loc in locations]


async def methods_for(conn: asyncpg.Connection | asyncpg.Pool, country_iso: str, currency: str,
                      *, users_only: bool = True) -> list[Method]:
    rows = await conn.fetch(
        "SELECT m.id, m.name, m.code, m.cost FROM shipping_methods m WHERE m.currency = $2"
        " AND ($3 = false OR m.available_to_users)"
        " AND EXISTS (SELECT 1 FROM zones z WHERE z.id = ANY(m.zone_ids) AND $1 = ANY(z.countries))"
        " ORDER BY m.cost, m.id", country_iso, currency, users_only)
    return [Method(r["id"], r["name"], r["code"], Decimal(r["cost"])) for r in rows]


async def build_shipments(conn: asyncpg.Connection, request: DeliveryRequested) -> None:
    """Answer the order's DeliveryRequested (runs in the consumer's transaction)."""
    locations = await active_locations(conn)
    methods = await methods_for(conn, request.ship_address.country_iso, request.currency)
    ids = [r["id"] for r in await conn.fetch(
        "SELECT nextval('shipping_ids') AS id FROM generate_series(1, $1)", (len(methods) + 1) * len(locations))]
    shipments = await SHIPMENTS.load(conn, request.number)
    shipments.build(request.request_id, [Line(l.variant_id, l.quantity, l.track_inventory) for l in request.lines],
                    locations, methods, ids)
    await conn.executemany(
        "INSERT INTO shipment_index (number, order_number) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(s.number, request.number) for s in shipments.shipments])
    await SHIPMENTS.save(conn, shipments, key=request.number)


async def discard_shipments(conn: asyncpg.Connection, number: str) -> None:
    shipments = await SHIPMENTS.load(conn, number)
    shipments.discard()
    await SHIPMENTS.save(conn, shipments)


async def select_rate(pool: asyncpg.Pool, number: str, shipment_number: str, rate_id: int) -> CommandResult:
    return await SHIPMENTS.execute(pool, number, lambda s: s.select_rate(shipment_number, rate_id))


async def select_method(pool: asyncpg.Pool, number: str, shipment_number: str, method_id: int) -> CommandResult:
    return await SHIPMENTS.execute(pool, number, lambda s: s.select_method(shipment_number, method_id))
