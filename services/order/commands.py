"""Application handlers of the order service: load the Order, run the rule, append.

The order's own events update the order view as they are stored (in the append's own
statement, `project` below), so the response to a command already shows them.
"""
from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable

import asyncpg

from services.order.addresses import Country, validate_address
from services.order.domain import Order, new_guest_token, new_order_number, unauthorized
from services.order.projections import apply_to_view, view_changes
from services.order.view import read_order
from shared import db
from shared.aggregate import CommandResult, DomainError, not_found
from shared.contracts.order import CompletionRequested, DeliveryLine
from shared.envelope import EventEnvelope
from shared.eventstore import ConcurrencyConflict, StatementProjection
from shared.ids import next_id
from shared.saga import SagaInstance, encode_data
from shared.saga_rows import row_json
from shared.validation import INT32_MAX, ascii_int

if TYPE_CHECKING:
    from services.order.context import OrderContext


async def _apply_to_view(conn: asyncpg.Connection, events: list[EventEnvelope]) -> None:
    await apply_to_view(conn, *events)


# The order view applies the order's own events with them: outside a transaction, in the
# append's one statement (migrations/010_project_and_append.sql) unless a fold must read the
# view first; inside one (a saga step, a consumer), as its statements.
project = StatementProjection(_apply_to_view, view_changes, "project_and_append_events",
                              reading_function="order_as_written")


def project_after(fold: list[dict]) -> StatementProjection:
    """`project`, after `fold` (the view's changes of another service's event the Order answers):
    the two in the Order's append statement when its own changes need no read, else in turn."""
    async def changes(envelopes: list[EventEnvelope]) -> list | None:
        own = await view_changes(envelopes)
        return None if own is None else [*fold, *own]

    async def in_turn(conn: asyncpg.Connection, envelopes: list[EventEnvelope]) -> None:
        await conn.execute("SELECT apply_view_changes($1)", fold)
        await apply_to_view(conn, *envelopes)

    return StatementProjection(in_turn, changes, "project_and_append_events")


async def create_order(ctx: OrderContext, *, currency: str = "USD", email: str | None = None,
                       user_id: int | None = None, dialect: str | None = None) -> tuple[CommandResult[Order], str]:
    """The new order and its guest token: the one time the token is known (the order keeps
    only its digest), to be handed to the guest."""
    token = new_guest_token()
    for _ in range(20):  # a clash of random numbers is rare; pick another one
        order = Order(new_order_number())
        order.create(guest_token=token, currency=currency, email=email, user_id=user_id, dialect=dialect)
        try:
            async with ctx.pool.acquire() as conn:
                stored = await ctx.orders.save(conn, order, project=project)
            return CommandResult(order, stored), token
        except ConcurrencyConflict:
            continue
    raise RuntimeError("could not allocate an order number")


async def find_country(ctx: OrderContext, fields: dict) -> Country | None:
    """The country an address names (by id, name or ISO code) with its states: reference data,
    read through the service's `ReferenceCache` (shared/reference_cache.py)."""
    if fields.get("country_id") is not None:
        condition, value = "c.id = $1", _int_or_none(fields["country_id"])
    elif isinstance(fields.get("country_name"), str):
        condition, value = "lower(c.name) = lower($1)", fields["country_name"].strip()
    elif fields.get("country_iso") or isinstance(fields.get("country"), dict):
        condition, value = "c.iso = upper($1)", str(fields.get("country_iso") or fields["country"].get("iso"))
    else:
        return None

    async def load() -> Country | None:
        row = await ctx.pool.fetchrow(  # the country with its states, in one round trip
            "SELECT c.id, c.iso, c.states_required, coalesce(json_agg(json_build_array(s.id, s.name, s.abbr))"
            " FILTER (WHERE s.id IS NOT NULL), '[]') AS states"
            f" FROM countries c LEFT JOIN states s ON s.country_id = c.id WHERE {condition} GROUP BY c.id", value)
        if row is None:
            return None
        states = row["states"]
        names = {name.lower(): id_ for id_, name, _ in states} | {abbr.lower(): id_ for id_, _, abbr in states}
        return Country(row["id"], row["iso"], row["states_required"], frozenset(id_ for id_, _, _ in states), names)

    return await ctx.reference.read(("country", condition, value), ("countries", "states"), load)


def _int_or_none(value: Any) -> int | None:
    number = ascii_int(value)
    return number if number is not None and 0 < number <= INT32_MAX else None


async def _address(ctx: OrderContext, prefix: str, fields: Any, *, require_phone: bool = True):
    if fields is None:
        return None
    if not isinstance(fields, dict):
        fields = {}
    fields = dict(fields)
    if "state_id" in fields:
        fields["state_id"] = _int_or_none(fields["state_id"])
    if isinstance(fields.get("state"), dict):
        fields.setdefault("state_name", fields["state"].get("abbr") or fields["state"].get("name"))
    country = await find_country(ctx, fields)
    address_id = await next_id(ctx.pool, "address_ids")
    return validate_address(prefix, fields, country, address_id, require_phone=require_phone)


async def update_details(ctx: OrderContext, number: str, *, email: str | None, bill_address: Any,
                         ship_address: Any, use_billing: bool, require_phone: bool = True) -> CommandResult[Order]:
    try:
        bill = await _address(ctx, "bill_address", bill_address, require_phone=require_phone)
        ship = await _address(ctx, "ship_address", bill_address if use_billing and bill_address else ship_address,
                              require_phone=require_phone)
    except DomainError:
        # An unknown order is refused as unknown before its addresses are judged; asked only
        # here, so a valid change makes no extra read.
        _require(await ctx.orders.load(ctx.pool, number))
        raise
    return await ctx.orders.execute(ctx.pool, number, lambda order: _require(order).update_details(
        email=email, bill_address=bill, ship_address=ship), project=project)


def delivery_lines(order_view: dict) -> list[DeliveryLine]:
    return [DeliveryLine(variant_id=line["variant_id"], quantity=line["quantity"],
                         track_inventory=line["variant"].get("track_inventory", True))
            for line in order_view["line_items"]]


def _require(order: Order, guest_token: str | None = None) -> Order:
    """The order, if the caller may act on it: a guest only with its own token (an unknown
    order is refused like a wrong token, so a token reveals nothing of other orders)."""
    order.authorize(guest_token)
    if not order.exists:
        raise not_found("order")
    return order


def _refuse_unknown(facts: dict | None, guest_token: str | None) -> dict:
    if facts is None:
        raise unauthorized() if guest_token is not None else not_found("order")
    return facts


async def complete(ctx: OrderContext, number: str, *, guest_token: str | None = None) -> CommandResult[Order]:
    """Start the completion saga (services/order/saga.py): CompletionRequested, the view and
    the saga's row in one statement (`starting_the_saga`), then the saga is driven (a task of
    the runner's, which the caller need not wait for). The view supplies what the customer
    confirmed; the saga charges what the cart locks."""
    facts = _refuse_unknown(await read_order(ctx.pool, number), guest_token)
    has_valid_payment = any(p["state"] not in ("failed", "invalid", "void") for p in facts["payments"])
    lines = delivery_lines(facts)
    requested: list[SagaInstance] = []  # the instance the command's last attempt asks for
    stored: list[SagaInstance] = []  # as its start stored it

    def request(order: Order) -> None:
        request_id = _require(order, guest_token).request_completion(
            total=Decimal(facts["total"]), lines=lines, has_valid_payment=has_valid_payment)
        requested[:] = [ctx.completion.begin(order, request_id, encode_data(
            {"lines": [line.model_dump() for line in lines], "tax_rate": facts["tax_rate"]}))]

    result = await ctx.orders.execute(ctx.pool, number, request,
                                      project=starting_the_saga(ctx, lambda: requested[0], stored))
    if ctx.completion.pool is not None:
        ctx.completion.drive(stored[0].id, known=stored[0])  # as its start stored it: no read
    return result


def starting_the_saga(ctx: OrderContext, instance: Callable[[], SagaInstance],
                      stored: list[SagaInstance]) -> StatementProjection:
    """The order's projection, with the saga's row (`instance()`, started by the appended
    CompletionRequested) stored by the same write: in the append's one statement
    (migrations/014_start_completion.sql, no BEGIN/COMMIT), or in its transaction when the
    order store's appends need one (another service projecting them inline here). `stored`
    gets the instance as stored."""
    def cause(envelopes: list[EventEnvelope]) -> str:  # the saga's first call is caused by the request
        return str(next(e for e in envelopes if e.type == CompletionRequested.event_type).event_id)

    async def changes(envelopes: list[EventEnvelope]) -> dict | None:
        view = await view_changes(envelopes)
        if view is None:
            return None
        stored[:] = [ctx.completion.starting(instance(), cause=cause(envelopes))]
        return {"view": view, "saga": row_json(stored[0])}

    async def in_transaction(conn: asyncpg.Connection, envelopes: list[EventEnvelope]) -> None:
        await _apply_to_view(conn, envelopes)
        stored[:] = [await ctx.completion.started(conn, instance(), cause=cause(envelopes))]

    return StatementProjection(in_transaction, changes, "project_append_and_start_saga")


async def advance(ctx: OrderContext, number: str, *, require_email: bool = True,
                  guest_token: str | None = None, facts: dict | None = None) -> CommandResult[Order]:
    """One step forward. An order still awaiting its delivery records nothing: the caller asks
    shipping again (services/order/delivery.py) rather than refusing the step. `facts`: the
    order view as this service's write just left it (else read)."""
    facts = _refuse_unknown(facts or await read_order(ctx.pool, number), guest_token)

    def step(order: Order) -> None:
        if _require(order, guest_token).pending_delivery:
            return
        order.next(item_count=facts["item_count"], total=facts["total"], shipments_ready=bool(facts["shipments"]),
                   lines=delivery_lines(facts), require_email=require_email)

    return await ctx.orders.execute(ctx.pool, number, step, project=project)


async def cancel(ctx: OrderContext, number: str) -> CommandResult[Order]:
    return await ctx.orders.execute(ctx.pool, number, lambda order: _require(order).cancel(), project=project)


async def update_contact(ctx: OrderContext, number: str, *, email: str | None, phone: str | None):
    return await ctx.orders.execute(ctx.pool, number,
                                    lambda order: _require(order).update_contact(email=email, phone=phone),
                                    project=project)


async def release_unpaid_orders(ctx: OrderContext, limit: int = 50) -> list[str]:
    """Cancel the orders placed with nothing paid nor authorised whose time is up and that
    are still unpaid (Order.release_unpaid), each in one transaction with its row: safe with
    several sweepers (`FOR UPDATE SKIP LOCKED`); a concurrent change of the order rolls it
    back for the next sweep. Returns the orders released."""
    due = await ctx.pool.fetch("SELECT number FROM unpaid_order_releases WHERE release_at <= now()"
                           " ORDER BY release_at LIMIT $1", limit)
    released = []
    for row in due:
        try:
            async with ctx.pool.acquire() as conn, db.transaction(conn):
                number = await conn.fetchval("DELETE FROM unpaid_order_releases WHERE number IN (SELECT number"
                                             " FROM unpaid_order_releases WHERE number = $1 AND release_at <= now()"
                                             " FOR UPDATE SKIP LOCKED) RETURNING number", row["number"])
                if number is None:
                    continue
                order = await ctx.orders.load(conn, number)
                if order.release_unpaid():
                    await ctx.orders.save(conn, order, project=project)
                    released.append(number)
        except ConcurrencyConflict:
            continue
    return released


async def check_processable(ctx: OrderContext, number: str) -> Order:
    """GetCandy's `process` may go on (Order.check_processable); records nothing."""
    order = _require(await ctx.orders.load(ctx.pool, number))
    order.check_processable()
    return order
