"""Delivery by call (issue #26, plan S3.2): leaving `address`, the order asks shipping for
shipments through `ShippingService.build_shipments` instead of waiting for shipping's Kafka
consumer and then its own.

`commands.advance` commits `DeliveryRequested`; `deliver` then calls shipping outside any
transaction and applies its answer (`ShipmentsBuilt` or `ShipmentsUnavailable`) as the order's
`view` subscription would, in a second transaction under the same idempotency record: folded into
the view, `Order.delivery_arrived` / `delivery_refused` applied (both idempotent on
`pending_delivery`). Whichever applies an answer first wins: the call's reply, the inline
projection (in one process shipping's append applies it already), or the answer from Kafka.
A lost reply (shipping down, a timeout, a crash) is left to the Kafka path, which stays (shipping's
`orders` subscription answers the same request once), and to the next `advance`, which calls again.
In one process that subscription's copy of the DeliveryRequested waits while shipping's call is
under way and passes over a request the call built (services/shipping/operations.py, shared/under_way.py).
"""
from __future__ import annotations

import asyncio
import logging

from services.order.consumers import on_event
from services.order.context import OrderContext
from services.order.domain import Order
from services.order.view import VIEW_CONSUMER
from shared import context, db
from shared.aggregate import CommandResult
from shared.contracts.order import DeliveryRequested
from shared.envelope import EventEnvelope, upcast
from shared.eventstore import ConcurrencyConflict
from shared.faults import crash_point
from shared.inline import applied_here, remember_applied

log = logging.getLogger(__name__)

ATTEMPTS = 50


async def deliver(ctx: OrderContext, result: CommandResult[Order]) -> bool:
    """Ask shipping to answer the order's pending delivery request and apply the answer: True
    once it is applied (here or already), False when the reply was lost (the Kafka path answers)."""
    order = result.aggregate
    request = order.delivery_request
    if order.pending_delivery is None or request is None or request.request_id != order.pending_delivery:
        return False
    crash_point("order.after_delivery_requested")  # DeliveryRequested committed; shipping not asked yet
    cause = await _requested_event(ctx, result, request)
    try:
        with context.caused_by(cause.correlation_id if cause else context.current_correlation_id(),
                               str(cause.event_id) if cause else None):
            reply = await asyncio.wait_for(ctx.peers["shipping"].build_shipments(
                order.id, request_id=request.request_id, ship_address=request.ship_address.model_dump(mode="json"),
                currency=request.currency, lines=[line.model_dump(mode="json") for line in request.lines],
                requested_at=cause.sequence if cause else None, first=order.deliveries_requested == 1),
                ctx.settings.saga_call_timeout_ms / 1000)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # lost or refused on the way: shipping's consumer answers the event
        log.warning("delivery call failed; the answer comes from Kafka", extra={"fields": {
            "order": order.id, "request_id": request.request_id, "error": repr(exc)}})
        return False
    answers = [upcast(EventEnvelope.model_validate(event)) for event in reply.get("events", [])]
    if not answers:
        return False
    await apply_answers(ctx, answers)
    return True


async def _requested_event(ctx: OrderContext, result: CommandResult[Order],
                           request: DeliveryRequested) -> EventEnvelope | None:
    """The stored DeliveryRequested, the call's cause (as the event is the Kafka answer's): in
    the result when this `advance` recorded it, else (a call repeated) read again."""
    for envelope in result.events:
        if envelope.type == DeliveryRequested.event_type:
            return envelope
    found = await ctx.store.answers(ctx.pool, Order.aggregate_type, result.aggregate.id, request.request_id,
                                    [DeliveryRequested.event_type])
    return found[-1] if found else None


async def apply_answers(ctx: OrderContext, answers: list[EventEnvelope]) -> None:
    """Shipping's answer events, applied as the order's `view` subscription applies them (the
    view, then the Order), each once under that subscription's idempotency record, so the
    same events from Kafka (or applied inline) change nothing."""
    wanted = [envelope for envelope in answers if not applied_here(VIEW_CONSUMER, str(envelope.event_id))]
    if not wanted:
        return
    for _ in range(ATTEMPTS):
        try:
            recorded = []
            async with ctx.pool.acquire() as conn, db.transaction(conn):
                for envelope in wanted:
                    if await conn.execute("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)"
                                          " ON CONFLICT DO NOTHING", VIEW_CONSUMER, envelope.event_id) != "INSERT 0 1":
                        continue
                    with context.caused_by(envelope.correlation_id, str(envelope.event_id)):
                        await on_event(ctx, conn, envelope)
                    recorded.append(str(envelope.event_id))
            remember_applied(VIEW_CONSUMER, recorded)
            return
        except ConcurrencyConflict:
            await asyncio.sleep(0.002)
    raise ConcurrencyConflict(Order.aggregate_type, answers[0].aggregate_id, -1)
