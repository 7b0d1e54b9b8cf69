"""Handlers of the cart service for other services' events."""
from __future__ import annotations

import asyncpg

from shared.bus import events_topic
from shared.contracts import order as o
from shared.envelope import EventEnvelope, decode_event
from shared.order_directory import track_orders
from shared.service import Subscription
from services.cart.commands import CARTS


async def on_order_event(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    await track_orders(conn, envelope)
    match decode_event(envelope):
        case o.OrderCompleted():
            # A promotion's usage limit counts the completed orders that used it.
            cart = await CARTS.load(conn, envelope.aggregate_id)
            await conn.executemany(
                "INSERT INTO promotion_uses (promotion_id, order_number) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                [(promotion.id, envelope.aggregate_id) for promotion in cart.promotions.values()])
        case o.OrderCanceled():
            await conn.execute("DELETE FROM promotion_uses WHERE order_number = $1", envelope.aggregate_id)


subscriptions = [Subscription(name="orders", topics=[events_topic("order")], handler=on_order_event,
                              event_types=(o.OrderCreated, o.OrderCompleted, o.OrderCanceled),
                              # Promotion usage and the directory: no request waits on them.
                              background=True)]
