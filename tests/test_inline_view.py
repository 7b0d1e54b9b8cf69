"""Issue #26.1: in one process the order view is projected in the transaction of the cart,
shipping or payment command that caused it, so no request waits for the broker. The
order service's Kafka view consumer is held still for the whole checkout: every step still
answers with what it did, and the consumer, once let go, passes every event over."""
from __future__ import annotations

import asyncio

import asyncpg
import httpx

from tests.helpers.orders import without_live_stock
from tests.helpers.solidus import CARD, full_flow

HOLD = "consumer.order.view"


async def test_a_checkout_to_confirm_needs_no_view_consumer(gateway, system, stack, faults):
    faults.arm("hold", HOLD)
    try:
        number, token, total, _ = await full_flow(gateway, card=CARD, coupon="10off", complete=False)
        shown = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
        assert shown["state"] == "confirm" and shown["line_items"] and shown["shipments"], shown
        assert shown["payments"] and shown["adjustment_total"] != "0.0", shown
    finally:
        faults.disarm("hold", HOLD)
    conn = await asyncpg.connect(stack.database_url)
    try:
        # Every participant's event of this order was recorded as applied by the order view.
        missing = await conn.fetchval(
            "SELECT count(*) FROM (SELECT event_id FROM cart.events WHERE aggregate_id = $1"
            " UNION ALL SELECT event_id FROM shipping.events WHERE aggregate_id = $1"
            " UNION ALL SELECT event_id FROM payment.events WHERE aggregate_id = $1) e"
            " WHERE NOT EXISTS (SELECT 1 FROM \"order\".processed_events p"
            "                   WHERE p.consumer = 'order.view' AND p.event_id = e.event_id)", number)
        assert missing == 0
    finally:
        await conn.close()
    await asyncio.sleep(1.5)  # the consumer, let go, meets them again: nothing changes
    again = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert without_live_stock(again) == without_live_stock(shown)
    # ...and passes them over without a transaction: it remembers what was applied inline.
    metrics = httpx.get(f"{system.internal_url}/metrics", timeout=10).text
    skipped = [line for line in metrics.splitlines() if line.startswith("tillstream_consumer_messages_total{")
               and 'consumer="order.view"' in line and 'outcome="applied_inline"' in line]
    assert skipped and float(skipped[0].rsplit(" ", 1)[1]) > 0, skipped
