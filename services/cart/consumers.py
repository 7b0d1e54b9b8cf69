"""Handlers of the cart service for other services' events (the completion saga calls its
step operations instead: CartService.lock_cart, unlock_cart)."""
from __future__ import annotations

import asyncpg

from services.cart.context import CartContext
from shared.contracts import order as o
from shared.envelope import EventEnvelope, decode_event
from shared.kafka import events_topic
from shared.service import Subscription


async def on_order_event(ctx: CartContext, conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    match decode_event(envelope):
        case o.OrderCompleted():
            # The reservations made when the cart was locked become uses for good.
            await conn.execute("UPDATE promotion_uses SET completed = true WHERE order_number = $1",
                               envelope.aggregate_id)
        case o.OrderCanceled():
            await conn.execute("DELETE FROM promotion_uses WHERE order_number = $1", envelope.aggregate_id)


subscriptions = [
    Subscription(name="orders", topics=[events_topic("order")], handler=on_order_event,
                 event_types=(o.OrderCompleted, o.OrderCanceled),
                 # Promotion usage and the directory: no request waits on them.
                 background=True),
]
