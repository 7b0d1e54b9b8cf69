"""The order service's internal HTTP API (called by the gateway)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from services.order import commands
from services.order.projections import read_order

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
async def get_order(number: str, request: Request):
    order = await read_order(request.app.state.pool, number)
    if order is None:
        raise HTTPException(404, "order not found")
    return order
