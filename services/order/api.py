"""The order service's internal HTTP API (called by the gateway).

`X-Order-Token` on `next` and `complete`: the caller is a guest with that order token, and
the Order refuses the step unless the token is its own (`Order.authorize`), which spares the
gateway a read of the order first.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Query, Request
from pydantic import BaseModel

from shared.db import upsert
from shared.jsonutil import json_response
from services.order import commands
from services.order.projections import read_order
from services.order.view_watcher import watcher

router = APIRouter()
# How long a read or a step waits for the view to apply the events it names, unless told.
DEFAULT_VIEW_WAIT_MS = 3000



class CreateOrder(BaseModel):
    currency: str = "USD"
    email: str | None = None
    user_id: int | None = None


class UpdateDetails(BaseModel):
    email: str | None = None
    bill_address: Any = None
    ship_address: Any = None
    use_billing: bool = False
    require_phone: bool = True


class UpdateContact(BaseModel):
    email: str | None = None
    phone: str | None = None


async def answer(request: Request, result, *, awaiting: str | None = None, view_wait_ms: int | None = None,
                 status_code: int = 200, **extra: Any):
    """A command's events (and what it awaits); with `view_wait_ms`, also the order view once
    the awaited answer is in, so the gateway needs no second round trip. The order's own
    events are in the view already: they are applied in the command's transaction."""
    body = {"events": result.event_ids, "awaiting": awaiting, **extra}
    if view_wait_ms is not None:
        number = result.aggregate.id
        caught_up = await _wait(request, number, [], awaiting, view_wait_ms)
        body["order"] = await read_order(request.app.state.pool, number)
        body["view_stale"] = not caught_up
    return json_response(body, status_code=status_code)


@router.post("/orders", status_code=201)
async def create_order(body: CreateOrder, request: Request, view_wait_ms: int | None = None):
    result = await commands.create_order(request.app.state.pool, currency=body.currency,
                                         email=body.email, user_id=body.user_id)
    return await answer(request, result, view_wait_ms=view_wait_ms, status_code=201,
                        number=result.aggregate.id, token=result.aggregate.guest_token)


@router.patch("/orders/{number}/details")
async def update_details(number: str, body: UpdateDetails, request: Request, view_wait_ms: int | None = None):
    result = await commands.update_details(request.app.state.pool, number, email=body.email,
                                           bill_address=body.bill_address, ship_address=body.ship_address,
                                           use_billing=body.use_billing, require_phone=body.require_phone)
    return await answer(request, result, view_wait_ms=view_wait_ms)


@router.patch("/orders/{number}/contact")
async def update_contact(number: str, body: UpdateContact, request: Request, view_wait_ms: int | None = None):
    result = await commands.update_contact(request.app.state.pool, number, email=body.email, phone=body.phone)
    return await answer(request, result, view_wait_ms=view_wait_ms)


@router.put("/orders/{number}/next")
async def advance(number: str, request: Request, require_email: bool = True, view_wait_ms: int | None = None,
                  after: str = Query(""), x_order_token: str | None = Header(None)):
    """`after=<event ids>`: other services' events the step depends on (a payment just
    made, say); it waits (bounded) until the view has them, as a read would."""
    await _wait(request, number, _event_ids(after), None, DEFAULT_VIEW_WAIT_MS if view_wait_ms is None else view_wait_ms)
    result = await commands.advance(request.app.state.pool, number, require_email=require_email,
                                    guest_token=x_order_token)
    order = result.aggregate
    return await answer(request, result, awaiting=order.pending_delivery, view_wait_ms=view_wait_ms,
                        state=order.state)


@router.put("/orders/{number}/complete")
async def complete(number: str, request: Request, view_wait_ms: int | None = None,
                   x_order_token: str | None = Header(None)):
    result = await commands.complete(request.app.state.pool, number, guest_token=x_order_token)
    return await answer(request, result, awaiting=result.aggregate.completing, view_wait_ms=view_wait_ms)


@router.put("/orders/{number}/cancel")
async def cancel(number: str, request: Request, view_wait_ms: int | None = None):
    result = await commands.cancel(request.app.state.pool, number)
    return await answer(request, result, view_wait_ms=view_wait_ms)


@router.get("/orders/{number}")
async def get_order(number: str, request: Request, after: str = Query(""), timeout_ms: int = Query(DEFAULT_VIEW_WAIT_MS)):
    """The order view; with `after=<event ids>`, once the view has applied those events
    (waiting at most `timeout_ms`; `X-View-Stale: true` says the wait ran out)."""
    caught_up = await _wait(request, number, _event_ids(after), None, timeout_ms)
    order = await read_order(request.app.state.pool, number)
    if order is None:
        raise HTTPException(404, "order not found")
    return json_response(order, headers={"X-View-Stale": "false" if caught_up else "true"})


@router.get("/orders/{number}/applied")
async def wait_applied(number: str, request: Request, after: str = Query(""), timeout_ms: int = Query(DEFAULT_VIEW_WAIT_MS)):
    """Read-your-writes without reading the order: answers once the view has applied the
    events in `after` (`caught_up: false` when `timeout_ms` ran out)."""
    return {"caught_up": await _wait(request, number, _event_ids(after), None, timeout_ms)}


def _event_ids(after: str) -> list[str]:
    return [e for e in after.split(",") if e]


async def _wait(request: Request, number: str, event_ids: list[str], settled: str | None, timeout_ms: int) -> bool:
    """Until the view has applied `event_ids` and, with `settled`, that request was answered."""
    state = request.app.state
    if not event_ids and settled is None:
        return True
    return await watcher.wait_applied(state.settings.database_url, state.pool, number, event_ids,
                                      min(timeout_ms, 10_000) / 1000, settled=settled)


@router.get("/countries")
async def countries(request: Request):
    pool = request.app.state.pool
    rows = await pool.fetch("SELECT * FROM countries ORDER BY name")
    states = await pool.fetch("SELECT * FROM states ORDER BY name")
    return [{**dict(r), "states": [dict(s) for s in states if s["country_id"] == r["id"]]} for r in rows]


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


class TaxRate(BaseModel):
    currency: str
    rate: Decimal


@router.put("/admin/tax_rates")
async def load_tax_rates(rates: list[TaxRate], request: Request):
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        for rate in rates:
            await upsert(conn, "tax_rates", rate.model_dump(), key=("currency",))
    return {"tax_rates": len(rates)}


@router.put("/admin/countries")
async def load_countries(countries: list[CountryIn], request: Request):
    """Upserts reference data (demo data, imports); idempotent."""
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        for country in countries:
            await upsert(conn, "countries", country.model_dump(exclude={"states"}))
            for state in country.states:
                await upsert(conn, "states", {**state.model_dump(), "country_id": country.id})
    return {"countries": len(countries)}
