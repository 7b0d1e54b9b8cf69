"""The order service's internal HTTP API (called by the gateway)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from shared.jsonutil import json_response
from services.order import commands
from services.order.projections import read_order
from services.order.view_watcher import watcher

router = APIRouter()


class CreateOrder(BaseModel):
    currency: str = "USD"
    email: str | None = None
    user_id: int | None = None


@router.post("/orders", status_code=201)
async def create_order(body: CreateOrder, request: Request):
    state = request.app.state
    result = await commands.create_order(state.pool, state.store, currency=body.currency,
                                         email=body.email, user_id=body.user_id)
    return {"number": result.aggregate.id, "token": result.aggregate.guest_token,
            "events": [str(e.event_id) for e in result.events]}


@router.get("/orders/{number}")
async def get_order(number: str, request: Request, after: str = Query(""), timeout_ms: int = Query(3000)):
    """The order view; with `after=<event ids>`, once the view has applied those events
    (waiting at most `timeout_ms`; `X-View-Stale: true` says the wait ran out)."""
    state = request.app.state
    event_ids = [e for e in after.split(",") if e]
    caught_up = await watcher.wait_applied(state.settings.database_url, state.pool, number, event_ids,
                                           min(timeout_ms, 10_000) / 1000)
    order = await read_order(state.pool, number)
    if order is None:
        raise HTTPException(404, "order not found")
    return json_response(order, headers={"X-View-Stale": "false" if caught_up else "true"})
