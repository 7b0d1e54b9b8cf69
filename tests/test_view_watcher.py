"""The order view's read-your-writes wait, against the real database: a notification that
names the awaited events releases a waiter without asking the database again; one that
names no events makes it ask."""
from __future__ import annotations

import asyncio
import uuid

from services.order import view_watcher
from services.order.view import VIEW_CHANNEL, VIEW_CONSUMER, view_notification
from services.order.view_watcher import ViewWatcher


async def started_waiting(stack, pool, number: str, event_ids: list[str], monkeypatch) -> tuple[ViewWatcher,
                                                                                                asyncio.Task]:
    # No backstop poll within the test: whatever releases the waiter is a notification.
    monkeypatch.setattr(view_watcher, "_POLL_S", 60)
    watcher = ViewWatcher()
    wait = asyncio.create_task(watcher.wait_applied(stack.database_url, pool, number, event_ids, timeout=5))
    await asyncio.sleep(0.3)  # listening, and the database said: not applied
    assert not wait.done()
    return watcher, wait


async def test_a_notification_naming_the_awaited_events_releases_the_waiter(stack, pool, unique, monkeypatch):
    number, first, second = f"R{unique}", str(uuid.uuid4()), str(uuid.uuid4())
    watcher, wait = await started_waiting(stack, pool, number, [first, second], monkeypatch)
    try:
        # No processed-event record exists for either: only the notifications can release it.
        await pool.execute("SELECT pg_notify($1, $2)", VIEW_CHANNEL, view_notification(number, [first]))
        await pool.execute("SELECT pg_notify($1, $2)", VIEW_CHANNEL,
                           view_notification(f"{number}X", [second]))  # another order's
        await asyncio.sleep(0.3)
        assert not wait.done()
        await pool.execute("SELECT pg_notify($1, $2)", VIEW_CHANNEL, view_notification(number, [second]))
        assert await asyncio.wait_for(wait, 1) is True
    finally:
        wait.cancel()
        await watcher.close()


async def test_a_notification_that_names_no_events_makes_the_waiter_ask_the_database(stack, pool, unique, monkeypatch):
    number, event_id = f"R{unique}", str(uuid.uuid4())
    watcher, wait = await started_waiting(stack, pool, number, [event_id], monkeypatch)
    try:
        await pool.execute("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)",
                           VIEW_CONSUMER, uuid.UUID(event_id))
        await pool.execute("SELECT pg_notify($1, $2)", VIEW_CHANNEL,
                           view_notification(number, [str(uuid.uuid4()) for _ in range(101)]))
        assert await asyncio.wait_for(wait, 1) is True
    finally:
        wait.cancel()
        await watcher.close()


async def test_a_waiter_whose_events_never_arrive_times_out(stack, pool, unique):
    watcher = ViewWatcher()
    try:
        assert await watcher.wait_applied(stack.database_url, pool, f"R{unique}", [str(uuid.uuid4())],
                                          timeout=0.3) is False
    finally:
        await watcher.close()


async def test_a_waiter_for_a_request_asks_the_database_only_when_a_change_may_have_settled_it(
        stack, order_pool, monkeypatch):
    """While `complete` waits, the view changes many times (stock, payments); only the
    change of the request the order awaits can settle it, so only that makes it ask."""
    from datetime import datetime, timezone
    from decimal import Decimal

    from services.order.view import SqlOrderView

    asked = []
    real_has_settled = view_watcher.has_settled

    async def counting_has_settled(*args):
        asked.append(args)
        return await real_has_settled(*args)

    monkeypatch.setattr(view_watcher, "has_settled", counting_has_settled)
    monkeypatch.setattr(view_watcher, "_POLL_S", 60)
    number, watcher, pool = "R7", ViewWatcher(), order_pool
    try:
        await pool.execute("INSERT INTO order_view (number, guest_token_digest, state, currency, created_at,"
                           " updated_at, pending_request) VALUES ($1, 't', 'confirm', 'USD', now(), now(), 'cr-1')",
                           number)
        wait = asyncio.create_task(watcher.wait_applied(stack.database_url, pool, number, [], timeout=5,
                                                        settled="cr-1"))
        await asyncio.sleep(0.3)
        assert not wait.done() and len(asked) == 1  # asked once, on listening: still pending
        for total in range(1, 6):  # the view applies the order's stock and payment events
            async with pool.acquire() as conn, conn.transaction():
                view = SqlOrderView(conn)
                view.stamp_with_next_update(number, datetime.now(timezone.utc), [uuid.uuid4()])
                await view.update(number, ship_total=Decimal(total))
        await asyncio.sleep(0.3)
        assert not wait.done() and len(asked) == 1
        async with pool.acquire() as conn, conn.transaction():  # the saga settles the request
            await SqlOrderView(conn).update(number, pending_request=None, settled_by=None)
        assert await asyncio.wait_for(wait, 2) is True
        assert len(asked) == 2
    finally:
        await watcher.close()
