"""Waking consumers when something was published, instead of polling an idle broker.

The embedded broker does not answer a waiting fetch when data arrives, so a consumer that
wants to hear of a message within milliseconds has to fetch every few milliseconds: seven
consumer groups polling every 10 ms kept 0.7 of this machine's two cores busy with the
system at rest. So a consumer that has found nothing for CONSUMER_IDLE_AFTER_MS pauses its
partitions (no fetch at all) until a relay says it published to one of its topics, or
CONSUMER_WAKE_BACKSTOP_MS passes: each outbox relay NOTIFYs `tillstream_published` with
the topic, and one LISTEN connection per process wakes that process's consumers of the topic.
A relay wakes the consumers of its own process at once, in memory, when the broker has
acknowledged a batch (`published_here`); the NOTIFY, for other processes, rides on its next
statement, or goes alone once no append came for OUTBOX_FLUSH_MS (shared/outbox.py), and this
process's listener passes over it (it comes from one of its own relays' connections, whose
backends they name with `relay_here`). A lost notification costs the backstop's delay, never a
message: the consumer fetches from its position whatever woke it.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict

import asyncpg

CHANNEL = "tillstream_published"


class PublishedListener:
    def __init__(self) -> None:
        self._conn: asyncpg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        # The server pids of this process's relays' connections: what they NOTIFY was
        # announced here already, when it was published (`published_here`).
        self._own_relays: set[int] = set()

    async def subscribe(self, dsn: str, topics: list[str]) -> asyncio.Event:
        """An event set whenever a relay publishes to one of `topics`."""
        wake = asyncio.Event()
        for topic in topics:
            self._waiters[topic].add(wake)
        await self.listening(dsn)
        return wake

    def unsubscribe(self, wake: asyncio.Event) -> None:
        for waiters in self._waiters.values():
            waiters.discard(wake)

    async def listening(self, dsn: str) -> None:
        """(Re)connect the LISTEN connection if it is gone; a database that cannot be reached
        now is not an error here, the waiters fall back on the backstop meanwhile."""
        loop, lock = asyncio.get_running_loop(), self._lock
        if self._loop is not loop or lock is None:  # a new event loop (tests run several): nothing carries over
            lock = asyncio.Lock()
            self._conn, self._loop, self._lock = None, loop, lock
        if self._conn is not None and not self._conn.is_closed():
            return
        async with lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
                await conn.add_listener(CHANNEL, self._on_notify)
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
                return
            conn.add_termination_listener(self._on_lost)
            self._conn = conn

    def _on_lost(self, _conn) -> None:
        # Notifications may have been missed: let every waiter look for itself.
        self._conn = None
        for waiters in self._waiters.values():
            for wake in waiters:
                wake.set()

    def relay_here(self, server_pid: int, *, leading: bool = True) -> None:
        """A relay of this process leads on the connection of `server_pid` (or no longer does)."""
        if leading:
            self._own_relays.add(server_pid)
        else:
            self._own_relays.discard(server_pid)

    def published_here(self, topics) -> None:
        """A relay of this process published to `topics`: wake this process's consumers of them."""
        for topic in topics:
            for wake in self._waiters.get(topic, ()):
                wake.set()

    def _on_notify(self, _conn, pid: int, _channel, topic: str) -> None:
        if pid not in self._own_relays:
            self.published_here((topic,))


listener = PublishedListener()
