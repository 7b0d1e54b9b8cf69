"""Handlers of the shipping service for other services' events."""
from __future__ import annotations

import asyncpg

from services.shipping.commands import build_shipments, discard_shipments, release_stock
from services.shipping.context import ShippingContext
from shared.contracts import order as o
from shared.envelope import EventEnvelope, decode_event
from shared.kafka import events_topic
from shared.service import Subscription


async def on_order_event(ctx: ShippingContext, conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    match decode_event(envelope):
        case o.DeliveryRequested() as request:
            # The order calls build_shipments as well: whichever comes first builds (in one process
            # this waits while that call is under way, and is passed over if it built: operations.py).
            await build_shipments(ctx, conn, request.number, request.request_id, ship_address=request.ship_address,
                                  currency=request.currency, lines=request.lines, requested_at=envelope.sequence)
        case o.CheckoutRestarted() as restarted:
            await discard_shipments(ctx, conn, envelope.aggregate_id, restarted.delivery_request_id)
        case o.OrderCanceled() as canceled:
            await release_stock(ctx, conn, envelope.aggregate_id, canceled.completion_request_id)


# The order's events (the completion saga calls ShippingService.allocate_stock, release_stock).
ORDERS_CONSUMER = "shipping.orders"  # the handler's name: the service's, then the subscription's
subscriptions = [Subscription(name="orders", topics=[events_topic("order")], handler=on_order_event,
                              event_types=(o.DeliveryRequested, o.CheckoutRestarted, o.OrderCanceled))]
