"""The order view, folded from events. Applied inline for the order's own events (so a
command's response already shows them) and by consumers for other services' events."""
from __future__ import annotations

import asyncpg

from shared.contracts.order import OrderCreated
from shared.envelope import EventEnvelope, decode_event

VIEW_CHANNEL = "order_view"


async def apply_to_view(conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
    event = decode_event(envelope)
    if isinstance(event, OrderCreated):
        await conn.execute(
            "INSERT INTO order_view (number, guest_token, state, currency, email, user_id, created_at, updated_at)"
            " VALUES ($1, $2, 'cart', $3, $4, $5, $6, $6) ON CONFLICT (number) DO NOTHING",
            event.number, event.guest_token, event.currency, event.email, event.user_id, envelope.occurred_at,
        )
    await conn.execute("SELECT pg_notify($1, $2)", VIEW_CHANNEL, envelope.aggregate_id)


async def read_order(conn: asyncpg.Connection | asyncpg.Pool, number: str) -> dict | None:
    row = await conn.fetchrow("SELECT * FROM order_view WHERE number = $1", number)
    return dict(row) if row else None
