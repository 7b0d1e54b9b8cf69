"""Reference data read once per process, and read again in every process once it changes.

A checkout reads the same reference data over and over: the active stock locations, the
shipping methods of a zone, a country and its states, the payment methods, a variant and its
price (issue #26: ~15 statements per checkout). A service keeps the answers of such reads in
its `ReferenceCache` (one per service context, for its own schema's tables only), each answer
under a key and with the tables it was read from.

How an answer is dropped when its data changes, in every instance and process:
- each reference table has a statement-level trigger (`reference_changed()`,
  shared/sql/013_reference_changed.sql; the triggers are in each service's migrations) that
  NOTIFYs `tillstream_reference` with `<schema>.<table>`, sent when the change commits;
  loaders, operator tools and plain SQL need nothing special;
- one LISTEN connection per process (`ReferenceListener`) hands each notification to the
  caches of that schema, which drop the answers read from that table.

Correctness first:
- nothing is served from the cache, nor kept in it, unless the LISTEN connection is up; when
  it drops, every answer is dropped (a change may have been missed meanwhile). A read that
  finds it down reads the database, and connects it again (at most one try a second);
- an answer is kept only if no notification for its tables (and no drop of the connection)
  arrived while it was read: per table, a generation counter is compared before and after.
  PostgreSQL hands a notification to listeners only once its transaction is visible to new
  snapshots, so a read that starts after a notification arrived sees the change; a read that
  overlapped it is not kept. What remains is the notification's own delay (under a
  millisecond on one host): a read in that window is served the answer from before the change,
  as it would have been had it come a moment earlier;
- REFERENCE_CACHE_ENTRIES bounds the answers per service (least recently used out; 0: no
  cache), REFERENCE_CACHE_MAX_AGE_S how long one is served at most (a backstop, were a
  notification ever lost while the connection looked up).

Callers' duties: `load` reads in READ COMMITTED (the default: a snapshot taken before a change
that was already announced would be kept as current), does not run in a transaction that has
itself changed the tables it reads (an uncommitted answer would be kept, and nothing is
announced if it rolls back), and returns a value nobody mutates (it is shared by every later
read). Never cache what changes with each checkout (stock counts, coupon uses).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import Counter

from shared.db import OUTAGE_ERRORS, check_identifier
from shared.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "tillstream_reference"
_RETRY_S = 1.0  # between attempts to connect the LISTEN connection
READS = Counter("tillstream_reference_cache_reads_total",
                "Reads of reference data (shared/reference_cache.py): hit (no statement), miss, uncached"
                " (the LISTEN connection down, or the cache off)", ["schema", "outcome"])


@dataclass(frozen=True)
class _Entry:
    value: Any
    tables: frozenset[str]
    filled_at: float


class ReferenceCache:
    """One service's cached reads of its own reference tables, in one process."""

    def __init__(self, schema: str, settings: Settings, listener: ReferenceListener | None = None) -> None:
        self.schema = check_identifier(schema)
        self.dsn = settings.database_url
        self._max_entries = settings.reference_cache_entries
        self._max_age_s = settings.reference_cache_max_age_s
        self._listener = listener or LISTENER
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        # Bumped by each notification of a table, and (`_epoch`) each time the connection drops.
        self._generations: dict[str, int] = defaultdict(int)
        self._epoch = 0
        self._hits, self._misses, self._uncached = (READS.labels(self.schema, outcome)
                                                    for outcome in ("hit", "miss", "uncached"))

    async def read(self, key: Hashable, tables: Iterable[str], load: Callable[[], Awaitable[Any]]) -> Any:
        """The answer cached under `key`, or `load()`'s, kept if nothing it read from (`tables`,
        of this schema) changed meanwhile."""
        if self._max_entries <= 0 or not await self._listener.serving(self):
            self._uncached.inc()
            return await load()
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and now - entry.filled_at < self._max_age_s:
            self._entries.move_to_end(key)
            self._hits.inc()
            return entry.value
        self._misses.inc()
        tables = frozenset(tables)
        before = self._stamp(tables)
        value = await load()
        if self._listener.up and self._stamp(tables) == before:
            self._entries[key] = _Entry(value, tables, now)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return value

    def generation(self, table: str) -> int:
        """How many changes of `table` this cache has been told of (tests wait on it)."""
        return self._generations[table]

    def __len__(self) -> int:
        return len(self._entries)

    def close(self) -> None:
        self._listener.forget(self)
        self.drop_all()

    def _stamp(self, tables: frozenset[str]) -> tuple[int, ...]:
        return (self._epoch, *(self._generations[t] for t in sorted(tables)))

    def changed(self, table: str) -> None:
        self._generations[table] += 1
        for key in [k for k, entry in self._entries.items() if table in entry.tables]:
            del self._entries[key]

    def drop_all(self) -> None:
        self._epoch += 1
        self._entries.clear()


class ReferenceListener:
    """The process's LISTEN connection on `tillstream_reference`, for every cache of the
    process (of the current event loop: tests run several; nothing carries over)."""

    def __init__(self) -> None:
        self._conn: asyncpg.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._caches: set[ReferenceCache] = set()
        self._connecting = False
        self._next_try = 0.0

    @property
    def up(self) -> bool:
        conn = self._conn
        if conn is not None and conn.is_closed():
            # asyncpg calls termination listeners a loop turn after the connection is lost;
            # until then the caches would still hold what may have missed a change.
            self._on_lost(conn)
        return self._conn is not None

    async def serving(self, cache: ReferenceCache) -> bool:
        """Whether `cache` may serve and keep answers now: the connection is up (connected
        here if it is not and no attempt is under way or failed within the last second)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop: the old one's connection and caches are gone
            self._reset(loop)
        if cache not in self._caches:
            self._caches.add(cache)
            cache.drop_all()  # filled while not listening here
        if self.up:
            return True
        if not self._connecting and time.monotonic() >= self._next_try:
            await self._connect(cache.dsn)
        return self.up

    async def _connect(self, dsn: str) -> None:
        self._connecting = True
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
            except BaseException:
                await conn.close()
                raise
        except (*OUTAGE_ERRORS, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            self._next_try = time.monotonic() + _RETRY_S
            log.warning("reference cache not listening; reading the database", extra={"fields": {"error": str(exc)}})
            return
        finally:
            self._connecting = False
        conn.add_termination_listener(self._on_lost)
        for cache in self._caches:  # whatever was read before now may have missed a change
            cache.drop_all()
        self._conn = conn

    def _on_notify(self, _conn, _pid, _channel, payload: str) -> None:
        schema, _, table = payload.partition(".")
        for cache in list(self._caches):
            if cache.schema == schema:
                cache.changed(table)

    def _on_lost(self, conn) -> None:
        if conn is not self._conn:  # already noticed (by `up`), or replaced or let go since
            return
        self._conn = None
        for cache in list(self._caches):
            cache.drop_all()

    def forget(self, cache: ReferenceCache) -> None:
        """`cache` is closed; the connection closes with the last one."""
        self._caches.discard(cache)
        if not self._caches and self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()

    @property
    def backend_pid(self) -> int | None:
        """The LISTEN connection's server process (tests terminate it, as a failure would)."""
        return self._conn.get_server_pid() if self.up and self._conn is not None else None

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        for cache in self._caches:
            cache.drop_all()
        self._caches.clear()
        self._conn, self._loop, self._connecting, self._next_try = None, loop, False, 0.0


LISTENER = ReferenceListener()
