"""Handlers of the payment service for other services' events."""
from __future__ import annotations

import asyncpg

from services.payment.commands import settle_cancellation
from services.payment.context import PaymentContext
from shared.contracts import order as o
from shared.envelope import EventEnvelope, decode_event
from shared.kafka import events_topic
from shared.service import Subscription


async def on_order_event(ctx: PaymentContext, conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    match decode_event(envelope):
        case o.OrderCanceled():
            await settle_cancellation(ctx, conn, envelope.aggregate_id)


# The order's events (the completion saga calls PaymentService.process_payments, void_payments).
subscriptions = [Subscription(name="orders", topics=[events_topic("order")], handler=on_order_event,
                              event_types=(o.OrderCanceled,))]
