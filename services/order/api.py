"""The order service's operations (its application interface), called through the command
bus: in-process when hosted with the gateway, `POST /bus/<operation>` when alone.

A command answers with the events it caused and, with `view_wait_ms`, the order view once
what the command awaits (a delivery, a completion) has settled: one call instead of two.
`guest_token` on `advance` and `complete`: the caller is a guest with that order token, and
the Order refuses the step unless the token is its own (`Order.authorize`), which spares the
gateway a read of the order first.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterator

from pydantic import BaseModel

from services.order import commands
from services.order.view import read_order
from services.order.view_watcher import watcher
from shared.aggregate import CommandResult, DomainError, not_found
from shared.commandbus import ServiceApi, ServiceContext
from shared.db import Upsert, upsert_all

api = ServiceApi("order")
# How long a read or a step waits for the view to apply the events it names, unless told.
DEFAULT_VIEW_WAIT_MS = 3000
MAX_VIEW_WAIT_MS = 10_000


async def answer(ctx: ServiceContext, result: CommandResult, *, awaiting: str | None = None,
                 view_wait_ms: int | None = None, **extra: Any) -> dict:
    """A command's events (and what it awaits); with `view_wait_ms`, also the order view once
    the awaited answer is in. The order's own events are in the view already: they are
    applied in the command's transaction."""
    body = {"events": result.event_ids, "awaiting": awaiting, **extra}
    if view_wait_ms is not None:
        number = result.aggregate.id
        caught_up = await wait(ctx, number, [], awaiting, view_wait_ms)
        body["order"] = await read_order(ctx.pool, number)
        body["view_stale"] = not caught_up
    return body


async def wait(ctx: ServiceContext, number: str, event_ids: list[str], settled: str | None, timeout_ms: int) -> bool:
    """Until the view has applied `event_ids` and, with `settled`, that request was answered."""
    if not event_ids and settled is None:
        return True
    return await watcher.wait_applied(ctx.settings.database_url, ctx.pool, number, event_ids,
                                      min(timeout_ms, MAX_VIEW_WAIT_MS) / 1000, settled=settled)


@api.operation
async def create_order(ctx: ServiceContext, *, currency: str = "USD", email: str | None = None,
                       user_id: int | None = None, dialect: str | None = None,
                       view_wait_ms: int | None = None) -> dict:
    if dialect not in (None, "solidus", "getcandy"):
        raise DomainError("invalid_dialect", "dialect is solidus or getcandy", status=422)
    result, token = await commands.create_order(ctx.pool, currency=currency, email=email, user_id=user_id,
                                                dialect=dialect)
    return await answer(ctx, result, view_wait_ms=view_wait_ms, number=result.aggregate.id, token=token)


@api.operation
async def update_details(ctx: ServiceContext, number: str, *, email: str | None = None, bill_address: Any = None,
                         ship_address: Any = None, use_billing: bool = False, require_phone: bool = True,
                         view_wait_ms: int | None = None) -> dict:
    result = await commands.update_details(ctx.pool, number, email=email, bill_address=bill_address,
                                           ship_address=ship_address, use_billing=use_billing,
                                           require_phone=require_phone)
    return await answer(ctx, result, view_wait_ms=view_wait_ms)


@api.operation
async def update_contact(ctx: ServiceContext, number: str, *, email: str | None = None, phone: str | None = None,
                         view_wait_ms: int | None = None) -> dict:
    result = await commands.update_contact(ctx.pool, number, email=email, phone=phone)
    return await answer(ctx, result, view_wait_ms=view_wait_ms)


@api.operation
async def advance(ctx: ServiceContext, number: str, *, require_email: bool = True, view_wait_ms: int | None = None,
                  after: list[str] = (), guest_token: str | None = None) -> dict:
    """One checkout step. `after`: other services' events the step depends on (a payment
    just made, say); it waits (bounded) until the view has them, as a read would."""
    await wait(ctx, number, list(after), None, DEFAULT_VIEW_WAIT_MS if view_wait_ms is None else view_wait_ms)
    result = await commands.advance(ctx.pool, number, require_email=require_email, guest_token=guest_token)
    order = result.aggregate
    return await answer(ctx, result, awaiting=order.pending_delivery, view_wait_ms=view_wait_ms, state=order.state)


@api.operation
async def complete(ctx: ServiceContext, number: str, *, view_wait_ms: int | None = None,
                   guest_token: str | None = None) -> dict:
    result = await commands.complete(ctx.pool, number, guest_token=guest_token)
    return await answer(ctx, result, awaiting=result.aggregate.completing, view_wait_ms=view_wait_ms)


@api.operation
async def cancel(ctx: ServiceContext, number: str, *, view_wait_ms: int | None = None) -> dict:
    return await answer(ctx, await commands.cancel(ctx.pool, number), view_wait_ms=view_wait_ms)


@api.operation
async def get_order(ctx: ServiceContext, number: str, *, after: list[str] = (),
                    timeout_ms: int = DEFAULT_VIEW_WAIT_MS) -> dict:
    """The order view; with `after` (event ids), once the view has applied those events
    (waiting at most `timeout_ms`; `stale` says the wait ran out)."""
    caught_up = await wait(ctx, number, list(after), None, timeout_ms)
    order = await read_order(ctx.pool, number)
    if order is None:
        raise not_found("order")
    return {"order": order, "stale": not caught_up}


@api.operation
async def wait_applied(ctx: ServiceContext, number: str, *, after: list[str] = (),
                       timeout_ms: int = DEFAULT_VIEW_WAIT_MS) -> dict:
    """Read-your-writes without reading the order: answers once the view has applied the
    events in `after` (`caught_up: false` when `timeout_ms` ran out)."""
    return {"caught_up": await wait(ctx, number, list(after), None, timeout_ms)}


@api.operation
async def countries(ctx: ServiceContext) -> list[dict]:
    rows = await ctx.pool.fetch("SELECT * FROM countries ORDER BY name")
    states = await ctx.pool.fetch("SELECT * FROM states ORDER BY name")
    return [{**dict(r), "states": [dict(s) for s in states if s["country_id"] == r["id"]]} for r in rows]


# -- reference data (demo data, imports): admin operations, idempotent upserts --------------
class StateIn(BaseModel):
    id: int
    name: str
    abbr: str


class CountryIn(BaseModel):
    id: int
    iso: str
    iso3: str
    iso_name: str
    name: str
    numcode: int
    states_required: bool = False
    states: list[StateIn] = []

    def rows(self) -> Iterator[Upsert]:
        yield Upsert("countries", self.model_dump(exclude={"states"}))
        yield from (Upsert("states", {**state.model_dump(), "country_id": self.id}) for state in self.states)


class TaxRate(BaseModel):
    currency: str
    rate: Decimal


@api.operation
async def load_tax_rates(ctx: ServiceContext, *, rates: list[dict]) -> dict:
    await upsert_all(ctx.pool, (Upsert("tax_rates", rate.model_dump(), key=("currency",))
                                for rate in map(TaxRate.model_validate, rates)))
    return {"tax_rates": len(rates)}


@api.operation
async def load_countries(ctx: ServiceContext, *, countries: list[dict]) -> dict:
    await upsert_all(ctx.pool, (row for country in map(CountryIn.model_validate, countries) for row in country.rows()))
    return {"countries": len(countries)}
