"""Handlers of the cart service for other services' events (the completion saga calls its
step operations instead: CartService.lock_cart, unlock_cart)."""
from __future__ import annotations

import asyncpg

from services.cart.context import CartContext
from shared.contracts import order as o
from shared.envelope import EventEnvelope, decode_event
from shared.handler import Statement
from shared.kafka import events_topic
from shared.service import Subscription

# What an order's end does to its coupons' rows: the reservations made when the cart was
# locked become uses for good, or are freed.
_COMPLETED = "UPDATE promotion_uses SET completed = true WHERE order_number = $1"
_CANCELED = "DELETE FROM promotion_uses WHERE order_number = $1"


def _work(envelope: EventEnvelope) -> str | None:
    match decode_event(envelope):
        case o.OrderCompleted():
            return _COMPLETED
        case o.OrderCanceled():
            return _CANCELED
    return None


async def on_order_event(ctx: CartContext, conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    if (work := _work(envelope)) is not None:
        await conn.execute(work, envelope.aggregate_id)


async def order_event_statement(ctx: CartContext, envelopes: list[EventEnvelope]) -> Statement | None:
    """`on_order_event` as one statement with its record; a run of several (an order completed
    and canceled at once) runs the handler, in a transaction."""
    if len(envelopes) != 1:
        return None
    work = _work(envelopes[0])
    if work is None:  # nothing to do but record it
        return Statement("SELECT 1 FROM recorded")
    return Statement(f"{work} AND EXISTS (SELECT 1 FROM recorded) RETURNING 1", (envelopes[0].aggregate_id,))


subscriptions = [
    Subscription(name="orders", topics=[events_topic("order")], handler=on_order_event,
                 statement=order_event_statement, event_types=(o.OrderCompleted, o.OrderCanceled),
                 # Promotion usage and the directory: no request waits on them.
                 background=True),
]
