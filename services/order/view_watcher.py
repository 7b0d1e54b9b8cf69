"""Wait until the order view has applied given events: read-your-writes across services.

The view NOTIFYs `order_view` with the order number on every change; one LISTEN
connection per process wakes the waiters of that order, who re-check the
processed-event records. A short poll covers a notification lost between check and wait.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import asyncpg

from shared import db
from services.order.projections import VIEW_CHANNEL, has_settled, unapplied

_POLL_S = 0.05


class ViewWatcher:
    def __init__(self) -> None:
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    async def _ensure_listening(self, dsn: str) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await db.connect(dsn, "order")
                await self._conn.add_listener(VIEW_CHANNEL, self._on_notify)

    def _on_notify(self, _conn, _pid, _channel, number: str) -> None:
        for event in self._waiters.get(number, ()):
            event.set()

    async def wait_applied(self, dsn: str, pool: asyncpg.Pool, number: str, event_ids: list[str],
                           timeout: float, *, settled: str | None = None) -> bool:
        """True once the view has applied every one of `event_ids` and, with `settled`,
        once that request is no longer pending; False on timeout."""

        async def caught_up() -> bool:
            if event_ids and await unapplied(pool, event_ids):
                return False
            return settled is None or await has_settled(pool, number, settled)

        if await caught_up():
            return True
        await self._ensure_listening(dsn)
        wake = asyncio.Event()
        self._waiters[number].add(wake)
        deadline = time.monotonic() + timeout
        try:
            while True:
                wake.clear()
                if await caught_up():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(wake.wait(), min(remaining, _POLL_S))
                except asyncio.TimeoutError:
                    pass
        finally:
            self._waiters[number].discard(wake)
            if not self._waiters[number]:
                del self._waiters[number]

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


watcher = ViewWatcher()
