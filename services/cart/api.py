"""The cart service's internal HTTP API (called by the gateway)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from shared.order_directory import known_order

router = APIRouter()


@router.get("/orders/{number}")
async def order_as_known_here(number: str, request: Request):
    order = await known_order(request.app.state.pool, number)
    if order is None:
        raise HTTPException(404, "order not known to this service")
    return order
