"""A local replica of which orders exist and their checkout state, fed by order.events."""
from __future__ import annotations

import asyncpg
from fastapi import APIRouter, HTTPException, Request

from shared.contracts.order import OrderCreated
from shared.envelope import EventEnvelope, decode_event


async def track_orders(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    event = decode_event(envelope)
    if isinstance(event, OrderCreated):
        await conn.execute(
            "INSERT INTO order_directory (number, state, currency, updated_at) VALUES ($1, 'cart', $2, $3)"
            " ON CONFLICT (number) DO NOTHING", event.number, event.currency, envelope.occurred_at)


async def known_order(conn: asyncpg.Connection | asyncpg.Pool, number: str) -> dict | None:
    row = await conn.fetchrow("SELECT * FROM order_directory WHERE number = $1", number)
    return dict(row) if row else None


router = APIRouter()


@router.get("/orders/{number}")
async def order_as_known_here(number: str, request: Request):
    """What this service has heard of an order (operators and tests use it)."""
    order = await known_order(request.app.state.pool, number)
    if order is None:
        raise HTTPException(404, "order not known to this service")
    return order
