"""The order view, folded from events. Applied inline for the order's own events (so a
command's response already shows them) and by the `order.view` consumer for the other
services' events; a rebuild folds every stored event with the same `fold` into memory.
Each live apply NOTIFYs `order_view` so waiting readers wake at once."""
from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from services.order.memory_view import MemoryOrderView
from services.order.view import (
    BufferedOrderView,
    SqlOrderView,
    list_patch,
    placed_shipment_states,
    shipments_backordered,
)
from shared.contracts import SERVICES
from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import payment as p
from shared.contracts import shipping as s
from shared.envelope import DomainEvent, EventEnvelope, decode_event

# Solidus's payment states, as the payment service's events move a payment along.
PAYMENT_STATE_AFTER = {p.PaymentInvalidated: "invalid", p.PaymentAuthorized: "pending", p.PaymentCaptured: "completed",
                       p.PaymentFailed: "failed", p.PaymentVoided: "void", p.PaymentRefunded: "refunded"}


# Where a fold writes: the tables (live), a buffer of changes for one statement (live, the
# order's own commands), or memory (a rebuild).
OrderView = SqlOrderView | BufferedOrderView | MemoryOrderView


async def apply_to_view(conn: asyncpg.Connection, *envelopes: EventEnvelope) -> None:
    """The live path: fold events into the order view tables, inside the caller's
    transaction, and wake readers waiting on their orders."""
    await fold_all(SqlOrderView(conn), envelopes)


async def view_changes(envelopes: Sequence[EventEnvelope]) -> list[dict] | None:
    """What folding these events changes in the view, as the order service's one-statement
    append applies it (BufferedOrderView); None if the fold has to read the view."""
    return await BufferedOrderView.recorded(lambda view: fold_all(view, envelopes))


# Not about an order's own state, so not folded, stamped or notified: the notices of
# dead-lettered messages, which the services' topics carry among their events (keyed by
# their own ids). The completion saga's retired commands never reach the view: they were on
# `order.saga`, and a rebuild leaves their streams out (tillstream/operations.py `_fold`).
NOT_FOLDED = frozenset(f"{service}.MessageDeadLettered" for service in SERVICES)


async def fold_all(view: OrderView, envelopes: Sequence[EventEnvelope],
                   events: Sequence[DomainEvent] | None = None) -> None:
    """Fold events in order and stamp each order touched once, with its latest event's time
    (and, live, a notification naming the events applied). One function for the live view
    and for a rebuild (which folds in memory), so the two cannot differ in logic.
    `events`: the envelopes' events, when already decoded."""
    if any(e.type in NOT_FOLDED for e in envelopes):
        kept = [i for i, e in enumerate(envelopes) if e.type not in NOT_FOLDED]
        envelopes, events = [envelopes[i] for i in kept], events and [events[i] for i in kept]
    latest: dict[str, datetime] = {}
    applied: dict[str, list[uuid.UUID]] = {}
    last: dict[str, int] = {}
    for i, envelope in enumerate(envelopes):
        number = envelope.aggregate_id
        if number not in latest or envelope.occurred_at > latest[number]:
            latest[number] = envelope.occurred_at
        applied.setdefault(number, []).append(envelope.event_id)
        last[number] = i
    for i, (envelope, event) in enumerate(zip(envelopes, events or [None] * len(envelopes), strict=True)):
        number = envelope.aggregate_id
        if i != last[number]:
            await fold(view, envelope, event)
            continue
        # The order's last event in this batch: the stamp rides on its update, if it makes one.
        view.stamp_with_next_update(number, latest[number], applied[number])
        await fold(view, envelope, event)
        await view.stamp_if_not_done()


async def fold(view: OrderView, envelope: EventEnvelope,
               event: DomainEvent | None = None) -> None:
    """What one event does to the order view: each upstream service's events have their fold
    (`<service>.<Event>`); an event of none (or one a fold does not know) changes nothing."""
    event = event if event is not None else decode_event(envelope)
    folder = FOLDS.get(event.event_type.split(".", 1)[0])
    if folder is not None:
        await folder(view, envelope, event)


async def _fold_order(view: OrderView, envelope: EventEnvelope, event: DomainEvent) -> None:
    number = envelope.aggregate_id
    settled = {"pending_request": None, "settled_by": _event_id(envelope.causation_id)}
    match event:
        case o.OrderCreated():
            await view.create(event.number, guest_token_digest=event.guest_token_digest, dialect=event.dialect,
                              state="cart", currency=event.currency, email=event.email, user_id=event.user_id,
                              created_at=envelope.occurred_at, updated_at=envelope.occurred_at)
        case o.CheckoutRestarted():
            # Solidus deletes the (pending) shipments when the checkout restarts.
            await view.update(number, state=event.state, shipments=[], ship_total=Decimal(0), **settled)
        case o.CheckoutAdvanced():
            await view.update(number, state=event.to_state, **settled)
        case o.ContactDetailsChanged():
            contact = {"contact_phone": event.phone} | ({"email": event.email} if event.email is not None else {})
            await view.update(number, **contact)
        case o.OrderEmailChanged():
            await view.update(number, email=event.email)
        case o.BillAddressChanged():
            await view.update(number, bill_address=event.address.model_dump(mode="json"))
        case o.ShipAddressChanged():
            await view.update(number, ship_address=event.address.model_dump(mode="json"))
        case o.DeliveryRequested() | o.CompletionRequested():
            await view.update(number, pending_request=event.request_id)
        case o.DeliveryRefused():
            await view.update(number, refusal=event.model_dump(mode="json"), **settled)
        case o.OrderCanceled():
            await view.update(number, state="canceled")
        case o.PaymentStateChanged():
            await view.update(number, payment_total=event.payment_total, payment_state=event.payment_state,
                              shipment_state=event.shipment_state)
            if event.shipment_state in PLACED_SHIPMENT_STATES:
                await view.patch(number, placed_shipment_states(event.payment_state))
        case o.CompletionFailed():
            await view.update(number, state=event.state, refusal=event.model_dump(mode="json"), **settled)
        case o.OrderCompleted():
            await view.update(number, state="complete", completed_at=envelope.occurred_at,
                              payment_total=event.payment_total, payment_state=event.payment_state,
                              shipment_state=event.shipment_state, reference=event.reference, **settled)
            await view.patch(number, placed_shipment_states(event.payment_state))


async def _fold_shipping(view: OrderView, envelope: EventEnvelope, event: DomainEvent) -> None:
    number = envelope.aggregate_id
    match event:
        case s.ShipmentsBuilt():
            await _set_shipments(view, number, [sh.model_dump(mode="json") for sh in event.shipments])
        case s.ShippingRateSelected():
            shipments = await view.get(number, "shipments") or []
            for shipment in shipments:
                if shipment["number"] == event.shipment_number:
                    for rate in shipment["rates"]:
                        rate["selected"] = rate["id"] == event.rate_id
            await _set_shipments(view, number, shipments)
        case s.ShipmentRatesReplaced():
            await view.patch(number, list_patch("shipments", "number", event.shipment_number,
                                                {"rates": [rate.model_dump(mode="json") for rate in event.rates]},
                                                ship_total=True))
        case s.StockAllocated():
            # How much was backordered in the end: stock may have come in, or gone, since
            # the shipments were planned.
            backordered = {(u.shipment_number, u.variant_id): u.backordered for u in event.units if u.shipment_number}
            if backordered:
                await view.patch(number, shipments_backordered(backordered))
        case s.ShipmentsDiscarded():
            await _set_shipments(view, number, [])


async def _fold_payment(view: OrderView, envelope: EventEnvelope, event: DomainEvent) -> None:
    number = envelope.aggregate_id
    match event:
        case p.PaymentCreated():  # once: a redelivered PaymentCreated adds nothing
            source = event.source.model_dump(mode="json") if event.source else None
            await view.patch(number, list_patch("payments", "id", event.payment_id, {
                "id": event.payment_id, "payment_method_id": event.payment_method_id,
                "payment_method_name": event.payment_method_name, "method_type": event.method_type,
                "amount": str(event.amount), "state": "checkout", "created_at": envelope.occurred_at.isoformat(),
                "updated_at": envelope.occurred_at.isoformat(), "source": source}, how="append"))
        case _ if type(event) in PAYMENT_STATE_AFTER:
            await view.patch(number, list_patch("payments", "id", event.payment_id, {
                "state": PAYMENT_STATE_AFTER[type(event)], "updated_at": envelope.occurred_at.isoformat()}))


async def _fold_cart(view: OrderView, envelope: EventEnvelope, event: DomainEvent) -> None:
    number = envelope.aggregate_id
    match event:
        case c.LineItemAdded():
            await view.add_line(id=event.line_item_id, order_number=number, variant_id=event.variant.id,
                                quantity=event.quantity, price=event.price,
                                variant=event.variant.model_dump(mode="json"))
        case c.LineItemQuantityChanged():
            await view.set_line_quantity(event.line_item_id, event.quantity)
        case c.LineItemRemoved():
            await view.remove_line(event.line_item_id)
        case c.CartEmptied():
            await view.remove_lines(number)
            await _set_shipments(view, number, [])  # Solidus's empty deletes shipments too
        case c.CartRepriced():
            # Only a newer cart version counts: redeliveries and replays may come late.
            await view.reprice(number, envelope.sequence, item_total=event.item_total,
                               adjustment_total=event.adjustment_total, total_quantity=event.total_quantity,
                               item_count=event.item_count,
                               adjustments=[a.model_dump(mode="json") for a in event.adjustments])


Fold = Callable[[OrderView, EventEnvelope, DomainEvent], Awaitable[None]]
# Each upstream service's fold, by the service its events are named after.
FOLDS: dict[str, Fold] = {"order": _fold_order, "shipping": _fold_shipping, "payment": _fold_payment,
                          "cart": _fold_cart}


def _event_id(causation_id: str | None) -> uuid.UUID | None:
    """The causing event's id (None when a request, not an event, caused it)."""
    try:
        return uuid.UUID(causation_id) if causation_id else None
    except ValueError:
        return None


PLACED_SHIPMENT_STATES = ("ready", "pending", "backorder")


async def _set_shipments(view: OrderView, number: str, shipments: list[dict]) -> None:
    ship_total = sum((Decimal(r["cost"]) for sh in shipments for r in sh["rates"] if r["selected"]), Decimal("0"))
    await view.update(number, shipments=shipments, ship_total=ship_total)


