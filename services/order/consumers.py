"""Handlers of the order service for other services' events."""
from __future__ import annotations

import asyncpg

from shared.aggregate import Repository
from shared.bus import events_topic
from shared.contracts import cart as c
from shared.envelope import EventEnvelope, decode_event
from shared.service import Subscription
from services.order.commands import ORDER_STORE
from services.order.domain import Order
from services.order.projections import apply_to_view


async def on_cart_event(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    """Fold the event into the view and, when lines changed mid-checkout, restart it.

    Both happen in the consumer's transaction, so once the view has applied an event its
    consequences are visible too: read-your-writes for the gateway.
    """
    await apply_to_view(conn, envelope)
    event = decode_event(envelope)
    if isinstance(event, c.CartRepriced) and event.lines_changed:
        repository = Repository(ORDER_STORE, Order)
        order = await repository.load(conn, envelope.aggregate_id)
        order.restart_checkout(has_items=event.item_count > 0)
        for stored in await repository.save(conn, order):
            await apply_to_view(conn, stored)


subscriptions = [Subscription(name="view", topics=[events_topic("cart")], handler=on_cart_event)]
