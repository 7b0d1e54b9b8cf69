"""Handlers of the order service for other services' events.

Each folds the event into the order view and applies its consequences to the Order
aggregate in the same transaction, so once the view has applied an event its effects
are visible too: that is what makes the gateway's read-your-writes wait sufficient.
The Order is the one this process last committed, when it has it (`Repository.run`: no read).
"""
from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from operator import methodcaller
from typing import TYPE_CHECKING

import asyncpg

from services.order.commands import project, project_after, release_unpaid_orders
from services.order.domain import Order
from services.order.projections import apply_to_view, view_changes
from services.order.saga import COMPLETION
from services.order.view import VIEW_CONSUMER
from shared import context
from shared.contracts import cart as c
from shared.contracts import payment as p
from shared.contracts import shipping as s
from shared.envelope import DomainEvent, EventEnvelope, decode_event
from shared.faults import dropped, hold_point
from shared.handler import Statement
from shared.inline import InlineStatement, projected_inline
from shared.kafka import events_topic
from shared.service import Subscription

if TYPE_CHECKING:
    from services.order.context import OrderContext

log = logging.getLogger(__name__)


async def on_event(ctx: OrderContext, conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    event = decode_event(envelope)
    match event:
        case c.CartRepriced(lines_changed=True):
            decide = methodcaller("restart_checkout", has_items=event.item_count > 0)
        case s.ShipmentsBuilt() | s.ShipmentsUnavailable():
            decide = _the_orders_answer(event)
        case p.PaymentCaptured() | p.PaymentVoided() | p.PaymentRefunded():
            # A placed order's payment state follows its payments (the view has them once folded).
            await apply_to_view(conn, envelope)
            payments = await conn.fetchval("SELECT payments FROM order_view WHERE number = $1",
                                           envelope.aggregate_id) or []
            total = sum((Decimal(x["amount"]) for x in payments if x["state"] == "completed"), Decimal("0"))
            any_valid = any(x["state"] not in ("failed", "invalid", "void") for x in payments)
            await ctx.orders.run(conn, envelope.aggregate_id, methodcaller(
                "payments_changed", payment_total=total, any_valid=any_valid), project=project)
            return
        case _:
            await apply_to_view(conn, envelope)
            return
    # What the event asks of the Order, on the Order this process last committed, if any (no
    # read): an answer that is not the pending request's is ignored (nothing recorded), and
    # judged again on the stream then. The event's fold goes in the statement of the Order's
    # append, before the Order's own changes, unless it must read the view.
    fold = await view_changes([envelope])
    if fold is None:
        await apply_to_view(conn, envelope)
        await ctx.orders.run(conn, envelope.aggregate_id, decide, project=project)
    elif not await ctx.orders.run(conn, envelope.aggregate_id, decide, project=project_after(fold)):
        await conn.execute("SELECT apply_view_changes($1)", fold)  # the Order recorded nothing: the fold alone


def _the_orders_answer(event: DomainEvent) -> methodcaller | None:
    """What shipping's answer to a delivery request asks of the Order (it reads no view)."""
    match event:
        case s.ShipmentsBuilt():
            return methodcaller("delivery_arrived", event.request_id)
        case s.ShipmentsUnavailable():
            return methodcaller("delivery_refused", event.request_id, event.code, event.message)
    return None


async def answer_in_transaction(ctx: OrderContext, conn: asyncpg.Connection, envelopes: list[EventEnvelope]) -> None:
    """InlineStatement.before: the Order's answer to shipping's events, in shipping's transaction
    before its append, whose statement carries their fold (`inline_view_changes`): the Order's
    events and its view change in one statement, the fold and the processed record in shipping's."""
    for envelope in envelopes:
        decide = _the_orders_answer(decode_event(envelope))
        if decide is not None:
            with context.caused_by(envelope.correlation_id, str(envelope.event_id)):
                await ctx.orders.run(conn, envelope.aggregate_id, decide, project=project)


def _needs_the_order(event: DomainEvent) -> bool:
    """Whether `on_event` may change the Order for this event, besides the view."""
    match event:
        case s.ShipmentsBuilt() | s.ShipmentsUnavailable() | p.PaymentCaptured() | p.PaymentVoided() \
                | p.PaymentRefunded():
            return True
    return False


async def inline_view_changes(envelopes: list[EventEnvelope], premised: bool) -> list[dict] | None:
    """`on_event`'s work for other services' new events, as changes that ride in their append's
    statement (migrations/012_inline_view_statement.sql `apply_inline`), when it is only the
    view's and its fold reads nothing; None otherwise (on_event runs, in the append's
    transaction). A cart whose lines changed restarts the Order's checkout only past the cart:
    with `premised`, the changes ride on the premise that the order is not there (checked, its
    row locked, in the statement; when it fails, on_event runs after all)."""
    events = [decode_event(envelope) for envelope in envelopes]
    # In the producer's transaction, the Order answers shipping first (answer_in_transaction).
    if any(_needs_the_order(event) and (premised or _the_orders_answer(event) is None) for event in events):
        return None
    premises = [{"op": "expect_state_not_in", "number": envelope.aggregate_id,
                 "states": list(Order.CART_CHANGE_RESTARTS_FROM)}
                for envelope, event in zip(envelopes, events, strict=True)
                if isinstance(event, c.CartRepriced) and event.lines_changed]
    if premises and not premised:
        return None
    changes = await view_changes(envelopes)
    return None if changes is None else [*premises[:1], *changes]  # an append's events are one order's


async def view_statement(ctx: OrderContext, envelopes: list[EventEnvelope]) -> Statement | None:
    """`on_event` from Kafka as one statement with its record, when it is only the view's and
    its fold reads nothing (what an inline append carries: `inline_view_changes`), for one
    order's events (a run's key is its order); a cart whose lines changed rests on the premise
    the statement checks, and on_event runs when it does not hold (nothing stored)."""
    if len({envelope.aggregate_id for envelope in envelopes}) != 1:
        return None
    changes = await inline_view_changes(envelopes, premised=True)
    if changes is None:
        return None
    return Statement("SELECT apply_view_changes($1) WHERE EXISTS (SELECT 1 FROM recorded)", (changes,))


async def on_saga_answer(ctx: OrderContext, conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    """A participant's answer to the completion saga, from Kafka: the runner records it unless
    the call's reply did first (the same idempotency record), and goes on (shared/saga_runner.py)."""
    if dropped(f"saga.answer.{envelope.type}"):  # fault injection: the answer is lost on the way
        return
    await hold_point("saga.answer")
    await ctx.completion.handle(conn, envelope)


async def run_expired_steps(ctx: OrderContext) -> None:
    """Deadlines and retries: every SAGA_SWEEP_INTERVAL_MS, compensate the steps not answered
    in time (or aborted by an operator), and call again the steps whose reply was not
    recorded (SAGA_STEP_RETRY_MS). Every instance of the service sweeps; each saga is taken
    by one (`FOR UPDATE SKIP LOCKED`)."""
    while True:
        await asyncio.sleep(ctx.settings.saga_sweep_interval_ms / 1000)
        try:
            await ctx.completion.sweep(ctx.pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("saga sweep failed; retrying", extra={"fields": {"error": repr(exc)}})


async def run_unpaid_releases(ctx: OrderContext) -> None:
    """Every UNPAID_ORDER_SWEEP_INTERVAL_S, cancel the orders left unpaid past their time
    (commands.release_unpaid_orders). Every instance of the service sweeps."""
    while True:
        await asyncio.sleep(ctx.settings.unpaid_order_sweep_interval_s)
        try:
            released = await release_unpaid_orders(ctx)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("unpaid order sweep failed; retrying", extra={"fields": {"error": repr(exc)}})
            continue
        if released:
            log.info("unpaid orders released", extra={"fields": {"count": len(released)}})


# The services whose events the order view folds.
VIEW_TOPICS = [events_topic("cart"), events_topic("shipping"), events_topic("payment")]


def view_is_inline() -> bool:
    """Every service the view follows shares this process: their events are in the view as
    soon as they exist."""
    return all(projected_inline(VIEW_CONSUMER, topic.removesuffix(".events")) for topic in VIEW_TOPICS)


subscriptions = [
    # In one process applied in the participants' own transactions (no request waits for
    # the broker); apart, and for anything an inline application missed, through Kafka.
    Subscription(name="view", handler=on_event, inline=True, topics=VIEW_TOPICS,
                 inline_statement=InlineStatement(inline_view_changes, "apply_inline", before=answer_in_transaction),
                 statement=view_statement),
    # The completion saga (services/order/saga.py): the participants' answers move it on.
    Subscription(name="saga", handler=on_saga_answer, event_types=COMPLETION.listens_to(),
                 topics=[events_topic(participant) for participant in COMPLETION.participants]),
]
