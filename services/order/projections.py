"""The order view, folded from events. Applied inline for the order's own events (so a
command's response already shows them) and by the `order.view` consumer for the other
services' events; a rebuild folds every stored event with the same `fold` into memory.
Each live apply NOTIFYs `order_view` so waiting readers wake at once."""
from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

import asyncpg

from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import payment as p
from shared.contracts import shipping as s
from shared.envelope import DomainEvent, EventEnvelope, decode_event

VIEW_CHANNEL = "order_view"
# Solidus's payment states, as the payment service's events move a payment along.
PAYMENT_STATE_AFTER = {p.PaymentInvalidated: "invalid", p.PaymentAuthorized: "pending", p.PaymentCaptured: "completed",
                       p.PaymentFailed: "failed", p.PaymentVoided: "void", p.PaymentRefunded: "refunded"}
VIEW_CONSUMER = "order.view"


async def apply_to_view(conn: asyncpg.Connection, *envelopes: EventEnvelope) -> None:
    """The live path: fold events into the order view tables, inside the caller's
    transaction, and wake readers waiting on their orders."""
    await fold_all(SqlOrderView(conn), envelopes)


# Not about an order's own state, so not folded, stamped or notified: the completion saga's
# commands to other services (what they ask for shows when it is answered), and the notices
# of dead-lettered messages.
NOT_FOLDED = frozenset({*(command.event_type for command in o.SAGA_COMMANDS),
                        *(f"{service}.MessageDeadLettered" for service in ("cart", "order", "shipping", "payment"))})


async def fold_all(view: "SqlOrderView | MemoryOrderView", envelopes: Sequence[EventEnvelope],
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
    for i, (envelope, event) in enumerate(zip(envelopes, events or [None] * len(envelopes))):
        number = envelope.aggregate_id
        if i != last[number]:
            await fold(view, envelope, event)
            continue
        # The order's last event in this batch: the stamp rides on its update, if it makes one.
        view.stamp_with_next_update(number, latest[number], applied[number])
        await fold(view, envelope, event)
        await view.stamp_if_not_done()


async def fold(view: "SqlOrderView | MemoryOrderView", envelope: EventEnvelope,
               event: DomainEvent | None = None) -> None:
    """What one event does to the order view."""
    event = event if event is not None else decode_event(envelope)
    number = envelope.aggregate_id
    settled = {"pending_request": None, "settled_by": _event_id(envelope.causation_id)}
    match event:
        case o.OrderCreated():
            await view.create(event.number, guest_token=event.guest_token, state="cart", currency=event.currency,
                              email=event.email, user_id=event.user_id, created_at=envelope.occurred_at,
                              updated_at=envelope.occurred_at)
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
        case s.ShipmentsBuilt():
            await _set_shipments(view, number, [sh.model_dump(mode="json") for sh in event.shipments])
        case s.ShippingRateSelected():
            shipments = await view.get(number, "shipments") or []
            for shipment in shipments:
                if shipment["number"] == event.shipment_number:
                    for rate in shipment["rates"]:
                        rate["selected"] = rate["id"] == event.rate_id
            await _set_shipments(view, number, shipments)
        case p.PaymentCreated():
            payments = await view.get(number, "payments") or []
            if not any(existing["id"] == event.payment_id for existing in payments):
                source = event.source.model_dump(mode="json", exclude={"gateway_token"}) if event.source else None
                await view.update(number, payments=[*payments, {
                    "id": event.payment_id, "payment_method_id": event.payment_method_id,
                    "payment_method_name": event.payment_method_name, "method_type": event.method_type,
                    "amount": str(event.amount), "state": "checkout", "created_at": envelope.occurred_at.isoformat(),
                    "updated_at": envelope.occurred_at.isoformat(), "source": source}])
        case _ if type(event) in PAYMENT_STATE_AFTER:
            payments = await view.get(number, "payments") or []
            for payment in payments:
                if payment["id"] == event.payment_id:
                    payment["state"] = PAYMENT_STATE_AFTER[type(event)]
                    payment["updated_at"] = envelope.occurred_at.isoformat()
            await view.update(number, payments=payments)
        case o.OrderCanceled():
            await view.update(number, state="canceled")
        case o.PaymentStateChanged():
            shipments = await view.get(number, "shipments") or []
            for shipment in shipments:
                shipment["state"] = event.shipment_state or shipment["state"]
            await view.update(number, payment_total=event.payment_total, payment_state=event.payment_state,
                              shipment_state=event.shipment_state, shipments=shipments)
        case o.CompletionFailed():
            await view.update(number, state=event.state, refusal=event.model_dump(mode="json"), **settled)
        case o.OrderCompleted():
            shipments = await view.get(number, "shipments") or []
            for shipment in shipments:
                shipment["state"] = event.shipment_state
            await view.update(number, state="complete", completed_at=envelope.occurred_at,
                              payment_total=event.payment_total, payment_state=event.payment_state,
                              shipment_state=event.shipment_state, shipments=shipments, reference=event.reference,
                              **settled)
        case s.ShipmentsDiscarded():
            await _set_shipments(view, number, [])
        case c.LineItemAdded():
            await view.add_line(id=event.line_item_id, order_number=number, variant_id=event.variant.id,
                                quantity=event.quantity, price=event.price, variant=event.variant.model_dump(mode="json"))
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


def _event_id(causation_id: str | None) -> uuid.UUID | None:
    """The causing event's id (None when a request, not an event, caused it)."""
    try:
        return uuid.UUID(causation_id) if causation_id else None
    except ValueError:
        return None


async def _set_shipments(view: "SqlOrderView | MemoryOrderView", number: str, shipments: list[dict]) -> None:
    ship_total = sum((Decimal(r["cost"]) for sh in shipments for r in sh["rates"] if r["selected"]), Decimal("0"))
    await view.update(number, shipments=shipments, ship_total=ship_total)


# The view's columns with their table defaults: those an OrderCreated leaves unset.
_COLUMN_DEFAULTS = {
    "completed_at": None, "item_total": Decimal(0), "adjustment_total": Decimal(0), "ship_total": Decimal(0),
    "total_quantity": 0, "item_count": 0, "adjustments": [], "cart_version": 0, "bill_address": None,
    "ship_address": None, "shipments": [], "pending_request": None, "refusal": None, "payments": [],
    "payment_total": Decimal(0), "payment_state": None, "shipment_state": None, "contact_phone": None,
    "reference": None, "settled_by": None}
# Columns a fold may read or write (the names go into SQL text; nothing else may).
_VIEW_COLUMNS = frozenset({"guest_token", "state", "currency", "email", "user_id", "created_at", "updated_at",
                           *_COLUMN_DEFAULTS})


def _columns(names) -> list[str]:
    unknown = set(names) - _VIEW_COLUMNS
    if unknown:
        raise ValueError(f"not an order view column: {sorted(unknown)}")
    return list(names)


class SqlOrderView:
    """The view's tables, one statement per change (the live path)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._stamp: tuple[str, datetime, list[uuid.UUID]] | None = None

    def stamp_with_next_update(self, number: str, at: datetime, event_ids: list[uuid.UUID]) -> None:
        self._stamp = (number, at, event_ids)

    async def stamp_if_not_done(self) -> None:
        if self._stamp is not None:
            number, at, event_ids = self._stamp
            self._stamp = None
            await self.touched(number, at, event_ids)

    async def create(self, number: str, **row) -> None:
        columns = _columns(row)
        await self.conn.execute(
            f"INSERT INTO order_view (number, {', '.join(columns)})"
            f" VALUES ($1, {', '.join(f'${i + 2}' for i in range(len(columns)))}) ON CONFLICT (number) DO NOTHING",
            number, *row.values())

    async def get(self, number: str, column: str):
        return await self.conn.fetchval(f"SELECT {_columns([column])[0]} FROM order_view WHERE number = $1", number)

    async def update(self, number: str, **changes) -> None:
        columns = _columns(changes)
        await self._update_row(number, ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(columns)),
                               list(changes.values()), stampable="updated_at" not in changes)

    async def reprice(self, number: str, version: int, **changes) -> None:
        columns = _columns(changes)
        await self._update_row(number, ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(columns))
                               + ", cart_version = $2", [version, *changes.values()], " AND cart_version < $2")

    async def _update_row(self, number: str, assignments: str, args: list, condition: str = "", *,
                          stampable: bool = True) -> None:
        """UPDATE the order's row; a stamp waiting for this order rides on it, with its
        notification, instead of taking a round trip of its own."""
        if self._stamp is None or self._stamp[0] != number or not stampable:
            await self.conn.execute(f"UPDATE order_view SET {assignments} WHERE number = $1{condition}",
                                    number, *args)
            return
        _, at, event_ids = self._stamp
        self._stamp = None
        n = len(args) + 2
        await self.conn.execute(
            f"WITH updated AS (UPDATE order_view SET {assignments}, updated_at = greatest(updated_at, ${n})"
            f" WHERE number = $1{condition}) SELECT pg_notify(${n + 1}, ${n + 2})",
            number, *args, at, VIEW_CHANNEL, view_notification(number, event_ids))

    async def add_line(self, **line) -> None:
        await self.conn.execute(
            "INSERT INTO order_line_items (id, order_number, variant_id, quantity, price, variant)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING", line["id"], line["order_number"],
            line["variant_id"], line["quantity"], line["price"], line["variant"])

    async def set_line_quantity(self, line_id: int, quantity: int) -> None:
        await self.conn.execute("UPDATE order_line_items SET quantity = $2 WHERE id = $1", line_id, quantity)

    async def remove_line(self, line_id: int) -> None:
        await self.conn.execute("DELETE FROM order_line_items WHERE id = $1", line_id)

    async def remove_lines(self, number: str) -> None:
        await self.conn.execute("DELETE FROM order_line_items WHERE order_number = $1", number)

    async def touched(self, number: str, at: datetime, event_ids: list[uuid.UUID]) -> None:
        # One round trip: the timestamp, and the wake-up of readers waiting on this order,
        # which names the events applied so a reader need not ask the database again.
        await self.conn.execute(
            "WITH touched AS (UPDATE order_view SET updated_at = greatest(updated_at, $2) WHERE number = $1)"
            " SELECT pg_notify($3, $4)", number, at, VIEW_CHANNEL, view_notification(number, event_ids))


class MemoryOrderView:
    """The view held in memory while a rebuild folds every stored event, then written out
    in bulk: a rebuild makes no round trip per event."""

    def __init__(self) -> None:
        self.orders: dict[str, dict] = {}
        self.lines: dict[int, dict] = {}
        self._stamp: tuple[str, datetime] | None = None

    async def create(self, number: str, **row) -> None:
        if number not in self.orders:
            self.orders[number] = {"number": number, **{k: list(v) if isinstance(v, list) else v
                                                        for k, v in _COLUMN_DEFAULTS.items()}, **row}

    async def get(self, number: str, column: str):
        order = self.orders.get(number)
        return order[column] if order else None

    async def update(self, number: str, **changes) -> None:
        if number in self.orders:
            self.orders[number].update(changes)

    async def reprice(self, number: str, version: int, **changes) -> None:
        order = self.orders.get(number)
        if order and order["cart_version"] < version:
            order.update(changes, cart_version=version)

    async def add_line(self, **line) -> None:
        # The table's foreign key: a line of an order the view does not have is refused.
        if line["order_number"] not in self.orders:
            raise LookupError(f"line item {line['id']} of unknown order {line['order_number']}")
        self.lines.setdefault(line["id"], line)

    async def set_line_quantity(self, line_id: int, quantity: int) -> None:
        if line_id in self.lines:
            self.lines[line_id]["quantity"] = quantity

    async def remove_line(self, line_id: int) -> None:
        self.lines.pop(line_id, None)

    async def remove_lines(self, number: str) -> None:
        for line_id in [i for i, line in self.lines.items() if line["order_number"] == number]:
            del self.lines[line_id]

    def stamp_with_next_update(self, number: str, at: datetime, event_ids: list[uuid.UUID]) -> None:
        self._stamp = (number, at)

    async def stamp_if_not_done(self) -> None:
        number, at = self._stamp
        order = self.orders.get(number)
        if order and at > order["updated_at"]:
            order["updated_at"] = at

    async def write(self, conn: asyncpg.Connection, schema: str) -> None:
        """Insert everything into `schema`'s (empty) view tables, in their own column order."""
        for table, rows in (("order_view", self.orders.values()),
                            ("order_line_items", sorted(self.lines.values(), key=lambda line: line["id"]))):
            statement = await conn.prepare(f'SELECT * FROM "{schema}".{table} LIMIT 0')
            columns = [a.name for a in statement.get_attributes()]
            missing = set(columns) - (set(next(iter(rows), {})) or set(columns))
            if missing:
                raise KeyError(f"the rebuild does not fill {table} columns {sorted(missing)}")
            await conn.executemany(
                f'INSERT INTO "{schema}".{table} ({", ".join(columns)})'
                f' VALUES ({", ".join(f"${i + 1}" for i in range(len(columns)))})',
                [tuple(row[c] for c in columns) for row in rows])


_READ_ORDER = """
SELECT v.*, coalesce(t.rate, 0) AS tax_rate, l.ids, l.variant_ids, l.quantities, l.prices, l.variants
FROM order_view v
LEFT JOIN tax_rates t ON t.currency = v.currency
LEFT JOIN LATERAL (
    SELECT array_agg(id ORDER BY id) AS ids, array_agg(variant_id ORDER BY id) AS variant_ids,
           array_agg(quantity ORDER BY id) AS quantities, array_agg(price ORDER BY id) AS prices,
           jsonb_agg(variant ORDER BY id) AS variants
    FROM order_line_items WHERE order_number = v.number) l ON true
WHERE v.number = $1"""


async def read_order(conn: asyncpg.Connection | asyncpg.Pool, number: str) -> dict | None:
    """The order view with its lines and taxes: one query (it is on every request's path)."""
    row = await conn.fetchrow(_READ_ORDER, number)
    if row is None:
        return None
    order = dict(row)
    ids, variant_ids, quantities, prices, variants = (order.pop(k) or [] for k in
                                                      ("ids", "variant_ids", "quantities", "prices", "variants"))
    order["line_items"] = [{"id": i, "variant_id": v, "quantity": q, "price": p, "variant": var}
                           for i, v, q, p, var in zip(ids, variant_ids, quantities, prices, variants)]
    order.update(order_taxes(order.pop("tax_rate"), order["item_total"] + order["adjustment_total"],
                             order["ship_total"]))
    order["total"] = (order["item_total"] + order["ship_total"] + order["adjustment_total"]
                      + order["additional_tax_total"])
    return order


def truncate(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_DOWN)


def order_taxes(rate: Decimal, items_after_discounts: Decimal, shipping: Decimal) -> dict[str, Decimal]:
    """VAT added on top (GetCandy's GBP channel), truncated to cents as the original does."""
    items_tax, ship_tax = truncate(items_after_discounts * rate), truncate(shipping * rate)
    return {"tax_rate": rate, "items_tax": items_tax, "shipping_tax": ship_tax,
            "additional_tax_total": items_tax + ship_tax}


async def has_settled(conn: asyncpg.Connection | asyncpg.Pool, number: str, request_id: str) -> bool:
    """The order no longer awaits `request_id`, and the view shows what settled it.

    The saga answers in its own consumer group, so it can record an order's completion
    before the view consumer has folded in the payment events that caused it (a captured
    payment, say). Settled therefore also means: the event that settled the request
    (`settled_by`) is applied to the view; the view consumer applies a partition in
    order, so that order's earlier events of the same service are in the view as well."""
    return bool(await conn.fetchval(
        "SELECT v.pending_request IS DISTINCT FROM $2 AND (v.settled_by IS NULL OR EXISTS ("
        " SELECT 1 FROM processed_events p WHERE p.consumer = $3 AND p.event_id = v.settled_by))"
        " FROM order_view v WHERE v.number = $1", number, request_id, VIEW_CONSUMER))


async def unapplied(conn: asyncpg.Connection | asyncpg.Pool, event_ids: Iterable[str]) -> set[str]:
    """Those of these events the view has not applied yet. The order's own events are
    applied in the transaction that stores them; the others once the consumer has them."""
    wanted = set(event_ids)
    if not wanted:
        return set()
    rows = await conn.fetch(
        "SELECT wanted.id::text FROM unnest($2::uuid[]) AS wanted(id) WHERE NOT"
        " (EXISTS (SELECT 1 FROM processed_events p WHERE p.consumer = $1 AND p.event_id = wanted.id)"
        " OR EXISTS (SELECT 1 FROM events e WHERE e.event_id = wanted.id))",
        VIEW_CONSUMER, list(wanted))
    return {row[0] for row in rows}


# A notification's payload is limited to 8,000 bytes: past this many ids, only the number.
NOTIFIED_IDS_MAX = 100


def view_notification(number: str, event_ids: Sequence[uuid.UUID | str]) -> str:
    """`<number> <id>,<id>,...`: the order whose view changed and the events it applied."""
    return number if len(event_ids) > NOTIFIED_IDS_MAX else f"{number} {','.join(map(str, event_ids))}"


def parse_view_notification(payload: str) -> tuple[str, set[str] | None]:
    """The order number and the events applied (None: not named, ask the database)."""
    number, _, ids = payload.partition(" ")
    return number, set(ids.split(",")) if ids else None
