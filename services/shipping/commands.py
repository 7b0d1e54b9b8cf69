"""Application handlers of the shipping service: reference data in, OrderShipments out."""
from __future__ import annotations

from decimal import Decimal

import asyncpg

from shared.aggregate import CommandResult, Repository
from shared.bus import events_topic
from shared.contracts.order import DeliveryRequested, StockAllocationRequested
from shared.contracts.shipping import AllocatedUnit
from shared.db import savepoint
from shared.eventstore import EventStore
from shared.faults import crash_point
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
        "SELECT m.id, m.name, m.code, m.cost, (SELECT z.name FROM zones z WHERE z.id = ANY(m.zone_ids)"
        " AND $1 = ANY(z.countries) ORDER BY z.id LIMIT 1) AS zone FROM shipping_methods m WHERE m.currency = $2"
        " AND ($3 = false OR m.available_to_users)"
        " AND EXISTS (SELECT 1 FROM zones z WHERE z.id = ANY(m.zone_ids) AND $1 = ANY(z.countries))"
        " ORDER BY m.cost, m.id", country_iso, currency, users_only)
    return [Method(r["id"], r["name"], r["code"], Decimal(r["cost"]), r["zone"]) for r in rows]


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


class _Short(Exception):
    pass


async def allocate_stock(conn: asyncpg.Connection, request: StockAllocationRequested) -> None:
    """The completion saga's step 2: take the locked lines from stock, all or none, in the
    consumer's transaction.

    Each decrement is conditional (`count_on_hand >= quantity`) and row-locked, so stock
    never goes negative however many orders compete for the last units.
    """
    shipments = await SHIPMENTS.load(conn, request.number)
    if shipments.allocation_answered(request.request_id):
        return
    units: list[AllocatedUnit] | None = []
    try:
        async with savepoint(conn):  # a shortage undoes the partial decrements
            for line in sorted(request.lines, key=lambda l: l.variant_id):  # one lock order: no deadlocks
                if not line.track_inventory:
                    continue
                # Matched by key, not ctid: a competing decrement gives the row a new
                # version (and ctid) while this one waits for its lock.
                location = await conn.fetchval(
                    "UPDATE stock_items SET count_on_hand = count_on_hand - $2"
                    " WHERE variant_id = $1 AND count_on_hand >= $2 AND stock_location_id = ("
                    " SELECT i.stock_location_id FROM stock_items i JOIN stock_locations l"
                    " ON l.id = i.stock_location_id WHERE l.active AND i.variant_id = $1 AND i.count_on_hand >= $2"
                    " ORDER BY i.stock_location_id LIMIT 1 FOR UPDATE OF i) RETURNING stock_location_id",
                    line.variant_id, line.quantity)
                if location is None:
                    raise _Short()
                units.append(AllocatedUnit(stock_location_id=location, variant_id=line.variant_id,
                                           quantity=line.quantity))
    except _Short:
        units = None
    crash_point("shipping.after_allocation")  # stock decremented, nothing committed yet
    shipments.record_allocation(request.request_id, units)
    await SHIPMENTS.save(conn, shipments)


async def release_stock(conn: asyncpg.Connection, number: str, request_id: str) -> None:
    """Compensation of step 2 (and a canceled order): put back what `request_id` allocated,
    answered once."""
    shipments = await SHIPMENTS.load(conn, number)
    for unit in shipments.release(request_id):
        await conn.execute("UPDATE stock_items SET count_on_hand = count_on_hand + $3"
                           " WHERE stock_location_id = $1 AND variant_id = $2",
                           unit.stock_location_id, unit.variant_id, unit.quantity)
    await SHIPMENTS.save(conn, shipments)


async def discard_shipments(conn: asyncpg.Connection, number: str) -> None:
    shipments = await SHIPMENTS.load(conn, number)
    shipments.discard()
    await SHIPMENTS.save(conn, shipments)


async def select_rate(pool: asyncpg.Pool, number: str, shipment_number: str, rate_id: int) -> CommandResult:
    return await SHIPMENTS.execute(pool, number, lambda s: s.select_rate(shipment_number, rate_id))


async def select_method(pool: asyncpg.Pool, number: str, shipment_number: str, method_id: int) -> CommandResult:
    return await SHIPMENTS.execute(pool, number, lambda s: s.select_method(shipment_number, method_id))
