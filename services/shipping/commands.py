"""Application handlers of the shipping service: reference data in, OrderShipments out.

The reference data (active stock locations, shipping methods and their zones) is read through
the service's `ReferenceCache` (shared/reference_cache.py): no statement while it is unchanged,
read again in every process once it changes. Stock counts never are: they change with every
checkout and are row-locked for allocation."""
from __future__ import annotations

from decimal import Decimal

import asyncpg

from services.shipping.context import ShippingContext
from services.shipping.domain import Line, Method, OrderShipments, StockLocation
from shared.aggregate import CommandResult, DomainError, not_found
from shared.contracts.order import Address, DeliveryLine
from shared.faults import crash_point
from shared.ids import next_id


async def active_locations(ctx: ShippingContext, conn: asyncpg.Connection | asyncpg.Pool,
                           variant_ids: list[int] | None = None, *, lock: bool = False) -> list[StockLocation]:
    """The active locations (cached reference data) with their stock (of `variant_ids` only, if
    given: read every time); `lock` row-locks those stock items, in one order (variant,
    location) so that competing completions cannot deadlock. A location (de)activated since
    the cached list was read (a notification's delay) has no stock here or is left out."""
    async def load() -> tuple:
        return tuple(await conn.fetch("SELECT id, name FROM stock_locations WHERE active ORDER BY id"))

    locations = await ctx.reference.read(("active locations",), ("stock_locations",), load)
    items = await conn.fetch(
        "SELECT i.stock_location_id, i.variant_id, i.count_on_hand, i.backorderable FROM stock_items i"
        " JOIN stock_locations l ON l.id = i.stock_location_id WHERE l.active"
        " AND ($1::int[] IS NULL OR i.variant_id = ANY($1::int[])) ORDER BY i.variant_id, i.stock_location_id"
        + (" FOR UPDATE OF i" if lock else ""), variant_ids)
    return [StockLocation(
        id=loc["id"], name=loc["name"],
        on_hand={i["variant_id"]: i["count_on_hand"] for i in items if i["stock_location_id"] == loc["id"]},
        backorderable=frozenset(i["variant_id"] for i in items
                                if i["stock_location_id"] == loc["id"] and i["backorderable"]))
        for loc in locations]


async def methods_for(ctx: ShippingContext, conn: asyncpg.Connection | asyncpg.Pool, country_iso: str,
                      currency: str, *, users_only: bool = True) -> list[Method]:
    async def load() -> tuple[Method, ...]:
        rows = await conn.fetch(
            "SELECT m.id, m.name, m.code, m.cost, (SELECT z.name FROM zones z WHERE z.id = ANY(m.zone_ids)"
            " AND $1 = ANY(z.countries) ORDER BY z.id LIMIT 1) AS zone FROM shipping_methods m WHERE m.currency = $2"
            " AND ($3 = false OR m.available_to_users)"
            " AND EXISTS (SELECT 1 FROM zones z WHERE z.id = ANY(m.zone_ids) AND $1 = ANY(z.countries))"
            " ORDER BY m.cost, m.id", country_iso, currency, users_only)
        return tuple(Method(r["id"], r["name"], r["code"], Decimal(r["cost"]), r["zone"]) for r in rows)

    return list(await ctx.reference.read(("methods", country_iso, currency, users_only),
                                         ("shipping_methods", "zones"), load))


async def method_ids(ctx: ShippingContext) -> frozenset[int]:
    """The ids of every shipping method (whatever it ships to)."""
    async def load() -> frozenset[int]:
        return frozenset(r["id"] for r in await ctx.pool.fetch("SELECT id FROM shipping_methods"))

    return await ctx.reference.read(("method ids",), ("shipping_methods",), load)


async def build_shipments(ctx: ShippingContext, conn: asyncpg.Connection, number: str, request_id: str, *,
                          ship_address: Address, currency: str, lines: list[DeliveryLine],
                          requested_at: int | None = None, first: bool = False) -> None:
    """Answer the order's delivery request `request_id` (called by the order, or its
    DeliveryRequested from Kafka; `requested_at`: its sequence in the order's stream), in the
    caller's transaction; a request answered already, or older than one answered, is not built."""
    async def build(shipments: OrderShipments) -> None:
        if request_id in shipments.delivery_answered or shipments.superseded(requested_at):
            return  # before any write: a no-op on a trusted state may be decided again (Repository.run)
        locations = await active_locations(ctx, conn, sorted({line.variant_id for line in lines}))
        methods = await methods_for(ctx, conn, ship_address.country_iso, currency)
        ids = [await next_id(ctx.pool, "shipping_ids", on=conn) for _ in range((len(methods) + 1) * len(locations))]
        shipments.build(request_id, [Line(item.variant_id, item.quantity, item.track_inventory) for item in lines],
                        locations, methods, ids, country_iso=ship_address.country_iso, currency=currency,
                        requested_at=requested_at)
        await conn.executemany(
            "INSERT INTO shipment_index (number, order_number) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            [(s.number, number) for s in shipments.shipments])
        for shipment in shipments.shipments:  # (a number is never given twice, kept or rolled back)
            ctx.shipment_orders.put(shipment.number, number)

    # Answered is for good (a repeated request, or its event from Kafka after the call): no read.
    await ctx.shipments.run(conn, number, build, key=number,
                            settled=lambda shipments: request_id in shipments.delivery_answered, new=first)


async def allocate_stock(ctx: ShippingContext, conn: asyncpg.Connection, number: str, request_id: str,
                         lines: list[DeliveryLine]) -> None:
    """The completion saga's step 2: take the locked lines from stock, all or none, in the
    consumer's transaction (OrderShipments.allocate decides from where, and how much is
    backordered). The stock items are row-locked while it decides, so stock that cannot be
    backordered never goes below zero however many orders compete for the last units. On
    the state this process last committed, if it has it: one behind the stream conflicts,
    and the step's retry (the stock taken rolled back with it) reads the stream."""
    async def allocate(shipments: OrderShipments) -> None:
        if shipments.allocation_answered(request_id):
            return  # before any write: a no-op on a trusted state may be decided again (Repository.run)
        tracked = sorted({line.variant_id for line in lines if line.track_inventory})
        locations = await active_locations(ctx, conn, tracked, lock=True) if tracked else []
        units = shipments.allocate(request_id, [Line(item.variant_id, item.quantity, item.track_inventory)
                                                for item in lines], locations)
        if units:
            await conn.execute(
                "UPDATE stock_items i SET count_on_hand = i.count_on_hand - u.quantity"
                " FROM (SELECT location, variant, sum(quantity) AS quantity"
                " FROM unnest($1::int[], $2::int[], $3::int[]) AS t(location, variant, quantity)"
                " GROUP BY location, variant) AS u WHERE i.stock_location_id = u.location AND i.variant_id = u.variant",
                [u.stock_location_id for u in units], [u.variant_id for u in units], [u.quantity for u in units])
        crash_point("shipping.after_allocation")  # stock decremented, nothing committed yet

    await ctx.shipments.run(conn, number, allocate, settled=lambda shipments: shipments.allocation_answered(request_id))


async def release_stock(ctx: ShippingContext, conn: asyncpg.Connection, number: str, request_id: str) -> None:
    """Compensation of step 2 (and a canceled order): put back what `request_id` allocated,
    answered once."""
    shipments = await ctx.shipments.load(conn, number)
    units = sorted(shipments.release(request_id), key=lambda u: (u.variant_id, u.stock_location_id))
    for unit in units:  # in the allocations' lock order
        await conn.execute("UPDATE stock_items SET count_on_hand = count_on_hand + $3"
                           " WHERE stock_location_id = $1 AND variant_id = $2",
                           unit.stock_location_id, unit.variant_id, unit.quantity)
    await ctx.shipments.save(conn, shipments)


async def discard_shipments(ctx: ShippingContext, conn: asyncpg.Connection, number: str,
                            request_id: str | None = None) -> None:
    """The checkout restarted: its shipments (those built for `request_id`, if given) are gone."""
    shipments = await ctx.shipments.load(conn, number)
    shipments.discard(request_id)
    await ctx.shipments.save(conn, shipments)


async def select_rate(ctx: ShippingContext, number: str, shipment_number: str, rate_id: int) -> CommandResult:
    return await ctx.shipments.execute(ctx.pool, number, lambda s: s.select_rate(shipment_number, rate_id))


async def select_method(ctx: ShippingContext, number: str, shipment_number: str, method_id: int) -> CommandResult:
    """Re-rate the shipment for one method (Solidus's select_shipping_method): unknown
    methods are not found; a method that does not ship to the order's destination, or in its
    currency, is refused."""
    if method_id not in await method_ids(ctx):
        raise not_found("shipping method")
    # The shipments as this process last committed them, if it did: `execute` runs on them as
    # on any trusted state (a conflict or a refusal is judged again on the stream; an order
    # whose shipments were rebuilt meanwhile has new shipment numbers, so a method chosen for
    # its old destination cannot land on them). Else read, and run on what was read.
    trusted = ctx.shipments.committed_here(number)
    shipments = trusted if trusted is not None else await ctx.shipments.load(ctx.pool, number)
    loaded = None if trusted is not None else shipments
    if shipments.destination is None:
        return await ctx.shipments.execute(ctx.pool, number,
                                           lambda s: s.select_method_among_rates(shipment_number, method_id),
                                           loaded=loaded)
    country_iso, currency = shipments.destination
    methods = await methods_for(ctx, ctx.pool, country_iso, currency, users_only=False)
    method = next((m for m in methods if m.id == method_id), None)
    if method is None:
        raise DomainError("shipping_method_unavailable", "cannot ship this shipment", field="shipping_method_id")
    rate_id = await next_id(ctx.pool, "shipping_ids")
    return await ctx.shipments.execute(ctx.pool, number, lambda s: s.select_method(shipment_number, method,
                                                                                   new_rate_id=rate_id),
                                       loaded=loaded)
