"""The order service's operations: `OrderOperations`, the implementation of `OrderService`
(services/order/api.py), built from the service's context in each process that hosts it
and called through shared/rpc.py (in-process, or `POST /bus/<operation>` when alone)."""
from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any, Iterator, Sequence, cast

from pydantic import BaseModel

from services.order import commands, processing
from services.order.api import (
    DEFAULT_VIEW_WAIT_MS,
    AccessFacts,
    Advanced,
    CaughtUp,
    CountriesLoaded,
    Country,
    Created,
    Found,
    OrderService,
    Outcome,
    TaxRatesLoaded,
)
from services.order.consumers import view_is_inline
from services.order.context import OrderContext
from services.order.delivery import deliver
from services.order.view import order_as_written, read_access_facts, read_order, read_settled_order
from shared.aggregate import CommandResult, DomainError, not_found
from shared.db import Upsert, upsert_all
from shared.eventstore import reading_the_write

MAX_VIEW_WAIT_MS = 10_000


async def answer(ctx: OrderContext, result: CommandResult, *, awaiting: str | None = None,
                 view_wait_ms: int | None = None, settled: bool = False, written: list | None = None,
                 shown: dict | None = None, **extra: Any) -> Any:
    """A command's events (and what it awaits); with `view_wait_ms`, also the order view once
    the awaited answer is in (`settled`: the caller saw it applied, nothing to wait for). The
    order's own events are in the view already: they are applied in the command's transaction.
    `written`: the write's own answer of the view (`reading_the_write`), when nothing came after
    it that the answer must show; `shown`: the order as the caller, which saw it settled, has
    it; else the view is read."""
    body = {"events": result.event_ids, "awaiting": awaiting, **extra}
    if view_wait_ms is not None:
        number = result.aggregate.id
        caught_up = settled or await wait(ctx, number, [], awaiting, view_wait_ms)
        if settled and shown is not None:
            body["order"] = shown
        else:
            body["order"] = order_as_written(written[0]) if written else await read_order(ctx.pool, number)
        body["view_stale"] = not caught_up
    return body


async def wait(ctx: OrderContext, number: str, event_ids: list[str], settled: str | None, timeout_ms: int) -> bool:
    """Until the view has applied `event_ids` and, with `settled`, that request was answered.
    When every service the view follows shares this process, it applies their events in the
    transactions that store them: an event that exists is in the view, nothing to wait for."""
    if settled is None and (not event_ids or view_is_inline()):
        return True
    return await ctx.watcher.wait_applied(ctx.settings.database_url, ctx.pool, number, event_ids,
                                      min(timeout_ms, MAX_VIEW_WAIT_MS) / 1000, settled=settled)


async def drive_settled(ctx: OrderContext, number: str, saga_id: str | None,
                        timeout_ms: int) -> tuple[bool, dict | None]:
    """Whether the completion's drive in this process (bounded by `timeout_ms`) settled it, and
    the order then: the runner calls the participants and records their replies, so when it
    ends the outcome is in the view and no notification need be awaited. (False, None) (wait
    for the view as before) when no drive runs here, or it stopped short (a reply lost: the
    sweep or Kafka goes on).

    A drive that recorded the end itself hands over the view as the end's write left it (read
    by that write's statement): settled, with nothing to read, where the view applies the
    participants' events as they are stored (`view_is_inline`: the answer that settled it is
    in the view); else one read tells both."""
    drive = ctx.completion.running(saga_id) if saga_id else None
    if drive is None:
        return False, None
    # asyncio.wait neither cancels the drive on timeout nor when this request is cancelled (a
    # client gone away), as a shield would not; nor does it raise what the drive raised.
    await asyncio.wait({drive}, timeout=min(timeout_ms, MAX_VIEW_WAIT_MS) / 1000)
    if not drive.done():
        return False, None
    ended = drive.result() if not drive.cancelled() and drive.exception() is None else None
    if ended is not None and view_is_inline():
        order = order_as_written(ended)
        if order is not None and order["pending_request"] != saga_id:
            return True, order
    settled, order = await read_settled_order(ctx.pool, number, cast(str, saga_id))
    return settled, order if settled else None


class OrderOperations(OrderService):
    def __init__(self, ctx: OrderContext) -> None:
        self.ctx = ctx

    async def create_order(self, *, currency: str = "USD", email: str | None = None, user_id: int | None = None,
                           dialect: str | None = None, view_wait_ms: int | None = None) -> Created:
        if dialect not in (None, "solidus", "getcandy"):
            raise DomainError("invalid_dialect", "dialect is solidus or getcandy", status=422)
        with reading_the_write() as written:
            result, token = await commands.create_order(self.ctx, currency=currency, email=email, user_id=user_id,
                                                        dialect=dialect)
        return await answer(self.ctx, result, view_wait_ms=view_wait_ms, written=written, number=result.aggregate.id,
                            token=token)

    async def update_details(self, number: str, *, email: str | None = None, bill_address: Any = None,
                             ship_address: Any = None, use_billing: bool = False, require_phone: bool = True,
                             view_wait_ms: int | None = None) -> Outcome:
        result = await commands.update_details(self.ctx, number, email=email, bill_address=bill_address,
                                               ship_address=ship_address, use_billing=use_billing,
                                               require_phone=require_phone)
        return await answer(self.ctx, result, view_wait_ms=view_wait_ms)

    async def update_contact(self, number: str, *, email: str | None = None, phone: str | None = None,
                             view_wait_ms: int | None = None) -> Outcome:
        result = await commands.update_contact(self.ctx, number, email=email, phone=phone)
        return await answer(self.ctx, result, view_wait_ms=view_wait_ms)

    async def update_and_advance(self, number: str, *, email: str | None = None, bill_address: Any = None,
                                 ship_address: Any = None, use_billing: bool = False, view_wait_ms: int | None = None
                                 ) -> Advanced:
        with reading_the_write() as written:
            await commands.update_details(self.ctx, number, email=email, bill_address=bill_address,
                                          ship_address=ship_address, use_billing=use_billing)
        # The step's facts: the view as the update's own statement left it (no read), if it wrote.
        return await self._advance(number, view_wait_ms=view_wait_ms,
                                   facts=order_as_written(written[0]) if written else None)

    async def advance(self, number: str, *, require_email: bool = True, view_wait_ms: int | None = None,
                      after: Sequence[str] = (), guest_token: str | None = None) -> Advanced:
        return await self._advance(number, require_email=require_email, view_wait_ms=view_wait_ms, after=after,
                                   guest_token=guest_token)

    async def _advance(self, number: str, *, require_email: bool = True, view_wait_ms: int | None = None,
                       after: Sequence[str] = (), guest_token: str | None = None,
                       facts: dict | None = None) -> Advanced:
        """`facts`: the order view as this service's write just left it (else `advance` reads it)."""
        await wait(self.ctx, number, list(after), None,
                   DEFAULT_VIEW_WAIT_MS if view_wait_ms is None else view_wait_ms)
        with reading_the_write() as written:
            result = await commands.advance(self.ctx, number, require_email=require_email, guest_token=guest_token,
                                            facts=facts)
        order = result.aggregate
        if order.pending_delivery:  # the delivery's answer changes the view after the write
            written.clear()
        delivered = bool(order.pending_delivery) and await deliver(self.ctx, result)
        return await answer(self.ctx, result, awaiting=order.pending_delivery, view_wait_ms=view_wait_ms,
                            settled=delivered, written=written, state=order.state)

    async def complete(self, number: str, *, view_wait_ms: int | None = None,
                       guest_token: str | None = None) -> Outcome:
        result = await commands.complete(self.ctx, number, guest_token=guest_token)
        saga_id = result.aggregate.completing
        settled, shown = (await drive_settled(self.ctx, number, saga_id, view_wait_ms) if view_wait_ms is not None
                          else (False, None))
        return await answer(self.ctx, result, awaiting=saga_id, view_wait_ms=view_wait_ms, settled=settled,
                            shown=shown)

    async def cancel(self, number: str, *, view_wait_ms: int | None = None) -> Outcome:
        return await answer(self.ctx, await commands.cancel(self.ctx, number), view_wait_ms=view_wait_ms)

    async def get_order(self, number: str, *, after: Sequence[str] = (),
                        timeout_ms: int = DEFAULT_VIEW_WAIT_MS) -> Found:
        caught_up = await wait(self.ctx, number, list(after), None, timeout_ms)
        order = await read_order(self.ctx.pool, number)
        if order is None:
            raise not_found("order")
        return {"order": order, "stale": not caught_up}

    async def access_facts(self, number: str) -> AccessFacts:
        facts = await read_access_facts(self.ctx.pool, number)
        if facts is None:
            raise not_found("order")
        return cast(AccessFacts, facts)

    async def wait_applied(self, number: str, *, after: Sequence[str] = (),
                           timeout_ms: int = DEFAULT_VIEW_WAIT_MS) -> CaughtUp:
        return {"caught_up": await wait(self.ctx, number, list(after), None, timeout_ms)}

    async def countries(self) -> list[Country]:
        async def load() -> tuple[tuple, tuple]:  # reference data (shared/reference_cache.py)
            return (tuple(await self.ctx.pool.fetch("SELECT * FROM countries ORDER BY name")),
                    tuple(await self.ctx.pool.fetch("SELECT * FROM states ORDER BY name")))

        rows, states = await self.ctx.reference.read(("country list",), ("countries", "states"), load)
        return cast(list[Country], [{**dict(r), "states": [dict(s) for s in states if s["country_id"] == r["id"]]}
                                    for r in rows])

    async def load_tax_rates(self, *, rates: list[dict[str, Any]]) -> TaxRatesLoaded:
        await upsert_all(self.ctx.pool, (Upsert("tax_rates", rate.model_dump(), key=("currency",))
                                         for rate in map(TaxRate.model_validate, rates)))
        return {"tax_rates": len(rates)}

    async def load_countries(self, *, countries: list[dict[str, Any]]) -> CountriesLoaded:
        await upsert_all(self.ctx.pool, (row for country in map(CountryIn.model_validate, countries)
                                         for row in country.rows()))
        return {"countries": len(countries)}

    async def process(self, number: str, *, payment_method_id: int | None = None, payment_handle: str | None = None,
                      payment_token: str | None = None, view_wait_ms: int | None = None,
                      step_wait_ms: int = DEFAULT_VIEW_WAIT_MS) -> Outcome:
        return await processing.process(self, self.ctx.peers["payment"], number, payment_method_id=payment_method_id,
                                        payment_handle=payment_handle, payment_token=payment_token,
                                        view_wait_ms=view_wait_ms, step_wait_ms=step_wait_ms)


# -- reference data (demo data, imports): the loaders' input, validated -----------------------
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
