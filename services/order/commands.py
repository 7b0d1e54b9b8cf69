"""Application handlers of the order service: load the Order, run the rule, append."""
from __future__ import annotations

import asyncpg

from shared.bus import events_topic
from shared.aggregate import CommandResult, Repository
from shared.eventstore import ConcurrencyConflict, EventStore
from services.order.domain import Order, new_guest_token, new_order_number
from services.order.projections import apply_to_view

ORDER_STORE = EventStore("order", events_topic("order"))


async def _project(conn: asyncpg.Connection, order: Order, events) -> None:
    for envelope in events:
        await apply_to_view(conn, envelope)


async def create_order(pool: asyncpg.Pool, store: EventStore, *, currency: str = "USD",
                       email: str | None = None, user_id: int | None = None) -> CommandResult[Order]:
    repository = Repository(store, Order)
    token = new_guest_token()
    for _ in range(20):  # a clash of random numbers is rare; pick another one
        order = Order(new_order_number())
        order.create(guest_token=token, currency=currency, email=email, user_id=user_id)
        try:
            async with pool.acquire() as conn, conn.transaction():
                stored = await repository.save(conn, order)
                await _project(conn, order, stored)
            return CommandResult(order, stored)
        except ConcurrencyConflict:
            continue
    raise RuntimeError("could not allocate an order number")
