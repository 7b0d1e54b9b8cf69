"""Handlers of the order service for other services' events.

Each folds the event into the order view and applies its consequences to the Order
aggregate in the same transaction, so once the view has applied an event its effects
are visible too: that is what makes the gateway's read-your-writes wait sufficient.
"""
from __future__ import annotations

from decimal import Decimal

import asyncpg

from shared.bus import events_topic
from shared.contracts import cart as c
from shared.contracts import payment as p
from shared.contracts.order import OrderCompleted
from shared.contracts import shipping as s
from shared.envelope import EventEnvelope, decode_event
from shared.faults import crash_point
from shared.service import Subscription
from services.order.commands import ORDERS, project
from services.order.projections import apply_to_view


async def on_event(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    await apply_to_view(conn, envelope)
    event = decode_event(envelope)
    order = None
    match event:
        case c.CartRepriced(lines_changed=True):
            order = await ORDERS.load(conn, envelope.aggregate_id)
            order.restart_checkout(has_items=event.item_count > 0)
        case s.ShipmentsBuilt():
            order = await ORDERS.load(conn, envelope.aggregate_id)
            order.delivery_arrived(event.request_id)
        case s.ShipmentsUnavailable():
            order = await ORDERS.load(conn, envelope.aggregate_id)
            order.delivery_refused(event.request_id, event.code, event.message)
        case p.PaymentCaptured() | p.PaymentVoided() | p.PaymentRefunded():
            # A placed order's payment state follows its payments (the view has them now).
            payments = await conn.fetchval("SELECT payments FROM order_view WHERE number = $1",
                                           envelope.aggregate_id) or []
            total = sum((Decimal(x["amount"]) for x in payments if x["state"] == "completed"), Decimal("0"))
            order = await ORDERS.load(conn, envelope.aggregate_id)
            order.payments_changed(payment_total=total, any_valid=any(
                x["state"] not in ("failed", "invalid", "void") for x in payments))
    if order is not None:
        await ORDERS.save(conn, order, project=project)


async def next_reference(conn: asyncpg.Connection) -> str:
    """GetCandy's order reference: YYYY-MM-NNNN, the month's highest plus one."""
    month = await conn.fetchval("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM')")
    number = await conn.fetchval(
        "INSERT INTO monthly_references (month, last) VALUES ($1, 1)"
        " ON CONFLICT (month) DO UPDATE SET last = monthly_references.last + 1 RETURNING last", month)
    return f"{month}-{number:04d}"


# The answers that move a completing order on; the saga passes over the rest of the topics.
SAGA_EVENTS = (s.StockAllocated, s.StockAllocationFailed, p.PaymentsProcessed, p.PaymentsDeclined)


async def on_saga_event(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    """The completion saga's steps (run by the faust worker in saga.py): each answer moves
    the Order, which is the saga's durable state, on; its new events reach the view inline."""
    event = decode_event(envelope)
    order = await ORDERS.load(conn, envelope.aggregate_id)
    match event:
        case s.StockAllocated() if order.completing == event.request_id and order.completion_total == 0:
            order.stock_allocated(event.request_id)  # nothing to pay: completes at once
            if order.pending and isinstance(order.pending[-1], OrderCompleted):
                order.pending[-1] = order.pending[-1].model_copy(update={"reference": await next_reference(conn)})
        case s.StockAllocated():
            order.stock_allocated(event.request_id)
        case s.StockAllocationFailed():
            order.stock_unavailable(event.request_id)
        case p.PaymentsProcessed() if order.completing == event.request_id:
            order.payments_processed(event.request_id, event.payment_total, reference=await next_reference(conn))
        case p.PaymentsDeclined():
            order.payments_declined(event.request_id, event.message)
        case _:
            return
    crash_point("saga.before_commit")  # the step is decided, not yet committed
    await ORDERS.save(conn, order, project=project)


subscriptions = [Subscription(name="view", handler=on_event,
                               topics=[events_topic("cart"), events_topic("shipping"), events_topic("payment")])]
