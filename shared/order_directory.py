"""A local replica of which orders exist and their checkout state, fed by order.events."""
from __future__ import annotations

import asyncpg

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
