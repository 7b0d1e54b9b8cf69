"""Read-your-writes across two consumer groups: the saga may record a completion before the
order view has folded in the payment events that caused it; the gateway's wait for
"settled" must not end in that gap (it once did: a captured payment showed as `checkout`)."""
from __future__ import annotations

import uuid
from decimal import Decimal

from services.order.commands import project
from services.order.domain import Order
from services.order.view import VIEW_CONSUMER, has_settled
from shared import context
from shared.contracts import order as o
from shared.eventstore import EventStore
from shared.kafka import events_topic


async def test_settled_waits_for_the_view_to_apply_what_caused_the_saga_step(order_schema, order_pool):
    pool = order_pool
    store = EventStore(order_schema, events_topic("order"))
    request_id = "cr-1"
    order = Order("R100")
    order.create(guest_token="t", currency="USD", email=None, user_id=None)
    async with pool.acquire() as conn, conn.transaction():
        stored = await store.append(conn, aggregate_type="Order", aggregate_id="R100", expected_version=0,
                                    events=order.pending)
        await project(conn, stored)
        await conn.execute("UPDATE order_view SET pending_request = $2 WHERE number = $1", "R100", request_id)
    assert not await has_settled(pool, "R100", request_id)  # still awaiting the answer

    # The saga handles the payment service's answer: the order completes, caused by it.
    answer_id = uuid.uuid4()  # a payment.PaymentsProcessed the view consumer has not reached
    with context.caused_by("corr", str(answer_id)):
        async with pool.acquire() as conn, conn.transaction():
            completed = await store.append(conn, aggregate_type="Order", aggregate_id="R100", expected_version=1,
                                           events=[o.OrderCompleted(
                number="R100", request_id=request_id, total=Decimal("10.00"), payment_total=Decimal("10.00"),
                payment_state="paid", shipment_state="ready")])
            await project(conn, completed)
    assert completed[0].causation_id == str(answer_id)
    # The order is no longer pending, but the view has not applied the answer yet.
    assert await pool.fetchval("SELECT pending_request FROM order_view WHERE number = 'R100'") is None
    assert not await has_settled(pool, "R100", request_id)

    await pool.execute("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)",
                       VIEW_CONSUMER, answer_id)
    assert await has_settled(pool, "R100", request_id)
