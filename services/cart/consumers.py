"""Handlers of the cart service for other services' events."""
from __future__ import annotations

import asyncpg

from services.cart.commands import lock_cart, unlock_cart
from shared.contracts import order as o
from shared.envelope import EventEnvelope, decode_event
from shared.kafka import SAGA_TOPIC, events_topic
from shared.service import Subscription


async def on_completion_step(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    """The completion saga's commands to the cart (services/order/saga.py, step 1)."""
    match decode_event(envelope):
        case o.CartLockRequested() as request:
            await lock_cart(conn, request.number, request.request_id, request.lines)
        case o.CartUnlockRequested() as request:
            await unlock_cart(conn, request.number, request.request_id)


async def on_order_event(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    match decode_event(envelope):
        case o.OrderCompleted():
            # The reservations made when the cart was locked become uses for good.
            await conn.execute("UPDATE promotion_uses SET completed = true WHERE order_number = $1",
                               envelope.aggregate_id)
        case o.OrderCanceled():
            await conn.execute("DELETE FROM promotion_uses WHERE order_number = $1", envelope.aggregate_id)


subscriptions = [
    # A completion waits for the cart's answer: fetched without the background delay. The
    # saga's commands come on their own topic, not among the order's events.
    Subscription(name="completion", topics=[SAGA_TOPIC], handler=on_completion_step,
                 event_types=(o.CartLockRequested, o.CartUnlockRequested)),
    Subscription(name="orders", topics=[events_topic("order")], handler=on_order_event,
                 event_types=(o.OrderCompleted, o.OrderCanceled),
                 # Promotion usage and the directory: no request waits on them.
                 background=True),
]
