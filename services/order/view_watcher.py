"""Wait until the order view has applied given events: read-your-writes across services.

The view NOTIFYs `order_view` on every change with the order number and the events it
applied (sent at commit, so a named event is applied for good); one LISTEN connection
per process wakes the waiters of that order. A waiter asks the database once, after it
has started listening, and afterwards only when a notification cannot answer it: one that
names no events, one that changed the request the order awaits (`?`: only those can settle
it), once the events it awaited are in while it also awaits a request, or the poll that
covers a lost notification.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import Counter

from services.order.view import VIEW_CHANNEL, has_settled, parse_view_notification, unapplied
from shared import db

# A lost notification (the LISTEN connection dropped) costs at most this delay.
_POLL_S = 0.25
# Requests (and saga ends) that had to listen for the view: in one process, none should.
WAITS = Counter("tillstream_order_view_waits_total", "Waits for the order view through LISTEN/NOTIFY")


@dataclass(eq=False)
class _Waiter:
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    applied: set[str] = field(default_factory=set)  # named by notifications since the last look
    ask_database: bool = True


class ViewWatcher:
    def __init__(self) -> None:
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._waiters: dict[str, set[_Waiter]] = defaultdict(set)

    async def _ensure_listening(self, dsn: str) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await db.connect(dsn, "order")
                await self._conn.add_listener(VIEW_CHANNEL, self._on_notify)

    def _on_notify(self, _conn, _pid, _channel, payload: str) -> None:
        number, applied, request_changed = parse_view_notification(payload)
        for waiter in self._waiters.get(number, ()):
            if applied is None or request_changed:
                waiter.ask_database = True
            if applied:
                waiter.applied |= applied
            waiter.wake.set()

    async def wait_applied(self, dsn: str, pool: asyncpg.Pool, number: str, event_ids: list[str],
                           timeout: float, *, settled: str | None = None) -> bool:
        """True once the view has applied every one of `event_ids` and, with `settled`,
        once that request is no longer pending; False on timeout."""
        pending = set(event_ids)
        WAITS.inc()
        await self._ensure_listening(dsn)
        waiter = _Waiter()
        self._waiters[number].add(waiter)
        deadline = time.monotonic() + timeout
        try:
            while True:
                waiter.wake.clear()
                awaited = bool(pending)
                pending -= waiter.applied
                waiter.applied.clear()
                # Whether a request has settled is only in the database; so is an event
                # applied before this waiter listened.
                if waiter.ask_database or (settled is not None and awaited and not pending):
                    waiter.ask_database = False
                    if pending:
                        pending = await unapplied(pool, pending)
                    if not pending and (settled is None or await has_settled(pool, number, settled)):
                        return True
                elif not pending and settled is None:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(waiter.wake.wait(), min(remaining, _POLL_S))
                except asyncio.TimeoutError:
                    waiter.ask_database = True
        finally:
            self._waiters[number].discard(waiter)
            if not self._waiters[number]:
                del self._waiters[number]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

