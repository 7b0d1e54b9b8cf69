"""The order view, folded from events. Applied inline for the order's own events (so a
command's response already shows them) and by the `order.view` consumer for the other
services' events. Each apply NOTIFYs `order_view` so waiting readers wake at once."""
from __future__ import annotations

import asyncpg

from shared.contracts import cart as c
from shared.contracts.order import CheckoutRestarted, OrderCreated
from shared.envelope import EventEnvelope, decode_event

VIEW_CHANNEL = "order_view"
VIEW_CONSUMER = "order.view"


async def apply_to_view(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    event = decode_event(envelope)
    number = envelope.aggregate_id
    match event:
        case OrderCreated():
            await conn.execute(
                "INSERT INTO order_view (number, guest_token, state, currency, email, user_id, created_at, updated_at)"
                " VALUES ($1, $2, 'cart', $3, $4, $5, $6, $6) ON CONFLICT (number) DO NOTHING",
                event.number, event.guest_token, event.currency, event.email, event.user_id, envelope.occurred_at)
        case CheckoutRestarted():
            await conn.execute("UPDATE order_view SET state = $2 WHERE number = $1", number, event.state)
        case c.LineItemAdded():
            await conn.execute(
                "INSERT INTO order_line_items (id, order_number, variant_id, quantity, price, variant)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING", event.line_item_id, number,
                event.variant.id, event.quantity, event.price, event.variant.model_dump(mode="json"))
        case c.LineItemQuantityChanged():
            await conn.execute("UPDATE order_line_items SET quantity = $2 WHERE id = $1",
                               event.line_item_id, event.quantity)
        case c.LineItemRemoved():
            await conn.execute("DELETE FROM order_line_items WHERE id = $1", event.line_item_id)
        case c.CartEmptied():
            await conn.execute("DELETE FROM order_line_items WHERE order_number = $1", number)
        case c.CartRepriced():
            await conn.execute(
                "UPDATE order_view SET item_total = $2, adjustment_total = $3, total_quantity = $4, item_count = $5,"
                " adjustments = $6, cart_version = $7 WHERE number = $1 AND cart_version < $7", number,
                event.item_total, event.adjustment_total, event.total_quantity, event.item_count,
                [a.model_dump(mode="json") for a in event.adjustments], envelope.sequence)
    await conn.execute("UPDATE order_view SET updated_at = greatest(updated_at, $2) WHERE number = $1",
                       number, envelope.occurred_at)
    await conn.execute("SELECT pg_notify($1, $2)", VIEW_CHANNEL, number)


async def read_order(conn: asyncpg.Connection | asyncpg.Pool, number: str) -> dict | None:
    row = await conn.fetchrow("SELECT * FROM order_view WHERE number = $1", number)
    if row is None:
        return None
    order = dict(row)
    lines = await conn.fetch("SELECT id, variant_id, quantity, price, variant FROM order_line_items"
                             " WHERE order_number = $1 ORDER BY id", number)
    order["line_items"] = [dict(line) for line in lines]
    order["total"] = order["item_total"] + order["ship_total"] + order["adjustment_total"]
    return order


async def unapplied(conn: asyncpg.Connection | asyncpg.Pool, event_ids: list[str]) -> int:
    """How many of these (other services') events the view has not applied yet."""
    if not event_ids:
        return 0
    applied = await conn.fetchval(
        "SELECT count(*) FROM processed_events WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
        VIEW_CONSUMER, event_ids)
    return len(set(event_ids)) - applied
