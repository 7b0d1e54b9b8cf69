"""The order view's storage and reads: its tables written one statement per change (the
live path in a transaction), as a list of changes sent with the order's append in one
statement (the order's own commands), or in bulk after a rebuild in memory
(services/order/memory_view.py; services/order/projections.py folds events into any of them),
the one-query read of an order, and the notifications that wake readers."""
from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal

import asyncpg

from shared.money import truncate_to_cents

VIEW_CHANNEL = "order_view"
VIEW_CONSUMER = "order.view"


# The view's columns with their table defaults: those an OrderCreated leaves unset.
_COLUMN_DEFAULTS = {
    "completed_at": None, "item_total": Decimal(0), "adjustment_total": Decimal(0), "ship_total": Decimal(0),
    "total_quantity": 0, "item_count": 0, "adjustments": [], "cart_version": 0, "bill_address": None,
    "ship_address": None, "shipments": [], "pending_request": None, "refusal": None, "payments": [],
    "payment_total": Decimal(0), "payment_state": None, "shipment_state": None, "contact_phone": None,
    "reference": None, "settled_by": None}
# Columns a fold may read or write (the names go into SQL text; nothing else may).
_VIEW_COLUMNS = frozenset({"guest_token_digest", "dialect", "state", "currency", "email", "user_id", "created_at",
                           "updated_at", *_COLUMN_DEFAULTS})


def _columns(names) -> list[str]:
    unknown = set(names) - _VIEW_COLUMNS
    if unknown:
        raise ValueError(f"not an order view column: {sorted(unknown)}")
    return list(names)


class _StampedOnNextUpdate:
    """An order's stamp (its latest event's time and the events applied, for the notification)
    rides on its next update; `touched` makes it a change of its own when no update came."""

    _stamp: tuple[str, datetime, list[uuid.UUID]] | None = None

    def stamp_with_next_update(self, number: str, at: datetime, event_ids: list[uuid.UUID]) -> None:
        self._stamp = (number, at, event_ids)

    async def stamp_if_not_done(self) -> None:
        if self._stamp is not None:
            number, at, event_ids = self._stamp
            self._stamp = None
            await self.touched(number, at, event_ids)

    def _take_stamp(self, number: str, stampable: bool) -> tuple[datetime, list[uuid.UUID]] | None:
        """The stamp waiting for `number`, for the update about to be made to ride on."""
        if self._stamp is None or self._stamp[0] != number or not stampable:
            return None
        _, at, event_ids = self._stamp
        self._stamp = None
        return at, event_ids

    async def touched(self, number: str, at: datetime, event_ids: list[uuid.UUID]) -> None:
        raise NotImplementedError

    def _update_change(self, number: str, assignments: dict, *, below_cart_version: int | None = None,
                       stampable: bool = True, request_changed: bool = False, patch: dict | None = None) -> dict:
        """An update of the order's row as migrations/012's apply_view_changes reads it, with the
        stamp waiting for this order riding on it and its notification."""
        change: dict = {"op": "update", "number": number, "set": assignments}
        if below_cart_version is not None:
            change["below_cart_version"] = below_cart_version
        if patch is not None:
            change["patch"] = patch
        if (stamp := self._take_stamp(number, stampable)) is not None:
            at, event_ids = stamp
            change["stamp"] = at.isoformat()
            change["notify"] = _notice(view_notification(number, event_ids, request_changed=request_changed))
        elif request_changed:
            change["notify"] = _notice(view_notification(number, []))
        return change


def list_patch(column: str, key: str, value, fields: dict, *, how: str = "merge", ship_total: bool = False) -> dict:
    """One element of a list column (`payments`, `shipments`) changed without reading the list:
    `merge` gives the elements whose `key` is `value` the `fields`; `append` adds `fields` as a
    new element unless one has that `key` value. `ship_total`: recomputed from the selected rates."""
    if column not in ("payments", "shipments") or how not in ("merge", "append"):
        raise ValueError(f"no such patch: {how} {column}")
    return {"column": column, "key": key, "value": value, "with": fields, "how": how, "ship_total": ship_total}


def shipments_backordered(units: dict[tuple[str, int], int]) -> dict:
    """Each shipment's manifest items given their backordered count from `units` (by shipment
    number and variant id), keeping their own (else 0) otherwise: without reading the list."""
    return {"column": "shipments", "how": "backordered",
            "units": {f"{shipment}|{variant}": count for (shipment, variant), count in units.items()}}


def placed_shipment_states(payment_state: str | None) -> dict:
    """Each shipment's state once its order is placed (Solidus's): `ready` when the order is paid
    and nothing in the shipment is backordered, else `pending`: without reading the list."""
    return {"column": "shipments", "how": "placed_states", "payment_state": payment_state}


class SqlOrderView(_StampedOnNextUpdate):
    """The view's tables, one statement per change (the live path)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

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
                               list(changes.values()), stampable="updated_at" not in changes,
                               request_changed="pending_request" in changes)

    async def reprice(self, number: str, version: int, **changes) -> None:
        columns = _columns(changes)
        await self._update_row(number, ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(columns))
                               + ", cart_version = $2", [version, *changes.values()], " AND cart_version < $2")

    async def _update_row(self, number: str, assignments: str, args: list, condition: str = "", *,
                          stampable: bool = True, request_changed: bool = False) -> None:
        """UPDATE the order's row; a stamp waiting for this order rides on it, with its
        notification, instead of taking a round trip of its own. A change of the request the
        order awaits is always notified (waiters for a request ask the database only then)."""
        n = len(args) + 2
        if (stamp := self._take_stamp(number, stampable)) is not None:
            at, event_ids = stamp
            await self.conn.execute(
                f"WITH updated AS (UPDATE order_view SET {assignments}, updated_at = greatest(updated_at, ${n})"
                f" WHERE number = $1{condition}) SELECT pg_notify(${n + 1}, ${n + 2})",
                number, *args, at, VIEW_CHANNEL, view_notification(number, event_ids, request_changed=request_changed))
        elif request_changed:
            await self.conn.execute(
                f"WITH updated AS (UPDATE order_view SET {assignments} WHERE number = $1{condition})"
                f" SELECT pg_notify(${n}, ${n + 1})", number, *args, VIEW_CHANNEL, view_notification(number, []))
        else:
            await self.conn.execute(f"UPDATE order_view SET {assignments} WHERE number = $1{condition}",
                                    number, *args)

    async def patch(self, number: str, patch: dict) -> None:
        """`list_patch`'s change, applied by the same SQL as the one-statement path's."""
        await self.conn.execute("SELECT apply_view_changes($1)", [self._update_change(number, {}, patch=patch)])

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


class _ReadRequired(Exception):
    """A fold asked the buffered view for a value: only a transaction can answer it."""


def _json(value):
    """A column's value as the JSON jsonb_populate_record reads back into its type: money as a
    string (no float on the way), times in ISO form with their offset, ids as text."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class BufferedOrderView(_StampedOnNextUpdate):
    """The view's changes recorded as JSON instead of executed, with SqlOrderView's semantics
    (a stamp riding on the order's next update, the same notifications), for the order
    service's SQL function that applies them and appends the events in one statement
    (migrations/010_project_and_append.sql). A fold that reads (`get`) cannot be recorded:
    `recorded` then answers None and the caller projects in a transaction instead."""

    def __init__(self) -> None:
        self.changes: list[dict] = []

    @classmethod
    async def recorded(cls, fold: Callable[[BufferedOrderView], Awaitable[None]]) -> list[dict] | None:
        """The changes `fold` makes, or None if it reads the view."""
        view = cls()
        try:
            await fold(view)
        except _ReadRequired:
            return None
        return view.changes

    async def create(self, number: str, **row) -> None:
        self.changes.append({"op": "create", "row": {"number": number, **_row(_columns(row), row)}})

    async def get(self, number: str, column: str):
        raise _ReadRequired(column)

    async def update(self, number: str, **changes) -> None:
        self._update_row(number, _row(_columns(changes), changes), stampable="updated_at" not in changes,
                         request_changed="pending_request" in changes)

    async def reprice(self, number: str, version: int, **changes) -> None:
        self._update_row(number, {**_row(_columns(changes), changes), "cart_version": version},
                         below_cart_version=version)

    def _update_row(self, number: str, assignments: dict, *, below_cart_version: int | None = None,
                    stampable: bool = True, request_changed: bool = False) -> None:
        self.changes.append(self._update_change(number, assignments, below_cart_version=below_cart_version,
                                                stampable=stampable, request_changed=request_changed))

    async def patch(self, number: str, patch: dict) -> None:
        self.changes.append(self._update_change(number, {}, patch=patch))

    async def add_line(self, **line) -> None:
        self.changes.append({"op": "add_line", "line": _row(_LINE_COLUMNS, line)})

    async def set_line_quantity(self, line_id: int, quantity: int) -> None:
        self.changes.append({"op": "set_line_quantity", "id": line_id, "quantity": quantity})

    async def remove_line(self, line_id: int) -> None:
        self.changes.append({"op": "remove_line", "id": line_id})

    async def remove_lines(self, number: str) -> None:
        self.changes.append({"op": "remove_lines", "number": number})

    async def touched(self, number: str, at: datetime, event_ids: list[uuid.UUID]) -> None:
        self.changes.append({"op": "update", "number": number, "set": {}, "stamp": at.isoformat(),
                             "notify": _notice(view_notification(number, event_ids))})


_LINE_COLUMNS = ["id", "order_number", "variant_id", "quantity", "price", "variant"]


def _row(columns: list[str], values: dict) -> dict:
    return {column: _json(values[column]) for column in columns}


def _notice(payload: str) -> dict:
    return {"channel": VIEW_CHANNEL, "payload": payload}


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
    return None if row is None else _order(dict(row))


async def read_access_facts(conn: asyncpg.Connection | asyncpg.Pool, number: str) -> dict | None:
    """What the order was given at its creation and never changes (OrderCreated's number,
    dialect, guest token digest, currency): the order's row alone, without its lines or taxes."""
    row = await conn.fetchrow("SELECT number, dialect, guest_token_digest, currency FROM order_view WHERE number = $1",
                              number)
    return None if row is None else dict(row)


def order_as_written(row: asyncpg.Record) -> dict | None:
    """The order as read_order reads it, from a row of the order's write joined to
    migrations/012's `order_as_written`: what the write left in the view, in its own statement."""
    if row["number"] is None:
        return None
    return _order({k: v for k, v in row.items() if k not in ("position", "event_id")})


def _order(order: dict) -> dict:
    ids, variant_ids, quantities, prices, variants = (order.pop(k) or [] for k in
                                                      ("ids", "variant_ids", "quantities", "prices", "variants"))
    order["line_items"] = [{"id": i, "variant_id": v, "quantity": q, "price": p, "variant": var}
                           for i, v, q, p, var in zip(ids, variant_ids, quantities, prices, variants, strict=True)]
    order.update(order_taxes(order.pop("tax_rate"), order["item_total"] + order["adjustment_total"],
                             order["ship_total"]))
    order["total"] = (order["item_total"] + order["ship_total"] + order["adjustment_total"]
                      + order["additional_tax_total"])
    return order


def order_taxes(rate: Decimal, items_after_discounts: Decimal, shipping: Decimal) -> dict[str, Decimal]:
    """VAT added on top (GetCandy's GBP channel), truncated to cents as the original does."""
    items_tax, ship_tax = truncate_to_cents(items_after_discounts * rate), truncate_to_cents(shipping * rate)
    return {"tax_rate": rate, "items_tax": items_tax, "shipping_tax": ship_tax,
            "additional_tax_total": items_tax + ship_tax}


async def has_settled(conn: asyncpg.Connection | asyncpg.Pool, number: str, request_id: str) -> bool:
    """The order no longer awaits `request_id`, and the view shows what settled it.

    The saga answers in its own consumer group, so it can record an order's completion
    before the view consumer has folded in the payment events that caused it (a captured
    payment, say). Settled therefore also means: the event that settled the request
    (`settled_by`) is applied to the view; the view consumer applies a partition in
    order, so that order's earlier events of the same service are in the view as well."""
    return bool(await conn.fetchval(f"SELECT {_SETTLED} FROM order_view v WHERE v.number = $1", number, request_id,
                                    VIEW_CONSUMER))


# Whether order `v` settled request $2, the view consumer being $3 (has_settled).
_SETTLED = ("v.pending_request IS DISTINCT FROM $2 AND (v.settled_by IS NULL OR EXISTS ("
            " SELECT 1 FROM processed_events p WHERE p.consumer = $3 AND p.event_id = v.settled_by))")
# has_settled's test beside read_order's columns: the end of a completion's wait in one read.
_READ_SETTLED_ORDER = _READ_ORDER.replace("SELECT v.*,", f"SELECT {_SETTLED} AS settled, v.*,", 1)


async def read_settled_order(conn: asyncpg.Connection | asyncpg.Pool, number: str,
                             request_id: str) -> tuple[bool, dict | None]:
    """Whether the order has settled `request_id` (`has_settled`), and the order as read_order
    reads it, in one query."""
    row = await conn.fetchrow(_READ_SETTLED_ORDER, number, request_id, VIEW_CONSUMER)
    if row is None:
        return False, None
    order = dict(row)
    return bool(order.pop("settled")), _order(order)


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


def view_notification(number: str, event_ids: Sequence[uuid.UUID | str], *, request_changed: bool = False) -> str:
    """`<number> <id>,<id>,...[ ?]`: the order whose view changed, the events it applied, and
    `?` when the request the order awaits changed (a waiter for a request asks the database
    then). Naming no events means: ask the database."""
    if not event_ids or len(event_ids) > NOTIFIED_IDS_MAX:
        return number
    return f"{number} {','.join(map(str, event_ids))}" + (" ?" if request_changed else "")


def parse_view_notification(payload: str) -> tuple[str, set[str] | None, bool]:
    """The order number, the events applied (None: not named, ask the database) and
    whether the awaited request changed."""
    number, _, rest = payload.partition(" ")
    ids, _, marker = rest.partition(" ")
    return number, (set(ids.split(",")) if ids else None), marker == "?"
