"""Handlers of the shipping service for other services' events."""
from __future__ import annotations

import asyncpg

from services.shipping.commands import allocate_stock, build_shipments, discard_shipments, release_stock
from shared.contracts import order as o
from shared.envelope import EventEnvelope, decode_event
from shared.kafka import SAGA_TOPIC, events_topic
from shared.service import Subscription


async def on_order_event(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    match decode_event(envelope):
        case o.DeliveryRequested() as request:
            await build_shipments(conn, request)
        case o.CheckoutRestarted():
            await discard_shipments(conn, envelope.aggregate_id)
        case o.StockAllocationRequested() as request:
            await allocate_stock(conn, request.number, request.request_id, request.lines)
        case o.StockReleaseRequested() as request:
            await release_stock(conn, request.number, request.request_id)
        case o.OrderCanceled() as canceled:
            await release_stock(conn, envelope.aggregate_id, canceled.completion_request_id)


# The order's events and the completion saga's commands (`order.saga`), in one group.
subscriptions = [Subscription(name="orders", topics=[events_topic("order"), SAGA_TOPIC], handler=on_order_event,
                              event_types=(o.DeliveryRequested, o.CheckoutRestarted,
                                           o.StockAllocationRequested, o.StockReleaseRequested, o.OrderCanceled))]
