"""The outbox relay: publishes outbox rows to Kafka in order, then deletes them.

One relay per schema is active at a time (a PostgreSQL advisory lock elects it), so
several service instances never interleave one order's messages. It wakes on the
NOTIFY that each append sends at commit and polls only as a backstop. A relay killed
mid-batch leaves its rows in place; the next leader publishes them again, which
consumers tolerate because they are idempotent on event id.

One statement per round while appends keep coming. The leader remembers the rows it
published and has not yet deleted (`_Unflushed`, in memory only) and reads the oldest rows
that are neither those nor held (below): with no watermark to move, a row whose transaction
commits after one with a higher id (ids come from a sequence; appends commit in id order
under the events table's lock, but a redrive or an operator's insert need not), a parked
row released for a retry and the rows it held are all simply still in the table, unread.
What it published is deleted, and consumers in other processes are NOTIFYed
(shared/wakeup.py; those of its own process are woken at once, in memory), in the statement
that reads the next batch: the NOTIFY on every read, the delete once OUTBOX_FLUSH_ROWS rows
or OUTBOX_FLUSH_MS have gathered. When no append comes for OUTBOX_FLUSH_MS after a publish,
both go in one statement of their own; and always when the relay pauses or stops. A new
leader starts from the table as it is: rows its predecessor published and had not yet
deleted are published again (consumers are idempotent; a crash mid-batch did the same).

So the outbox holds only rows not yet published, parked or held, and those published in the
last OUTBOX_FLUSH_MS or so: what `outbox_status`, the backlog gauges (shared/health.py) and
`tillstream outbox status` count as unpublished, without asking the relay.

A row the broker refuses for good (too large for it, say) is parked with its error
(`parked_at`, `error`) and reported by `tillstream outbox status`; a refusal that may pass
(the broker unreachable, a timeout) is retried as before. A parked row holds back the later
rows of its key (its order), which are *held*: publishing them would show consumers an
order's later events without an earlier one. Other keys flow. An operator ends it with
`tillstream outbox retry` (publish the parked row again) or `discard` (drop it), and the
held rows follow in order.
"""
from __future__ import annotations

import asyncio
import logging
import time
import zlib
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)

from shared import db, metrics, wakeup
from shared.envelope import newest_message
from shared.settings import Settings

log = logging.getLogger(__name__)


def relay_lock_key(schema: str) -> int:
    return zlib.crc32(f"tillstream.outbox.{schema}".encode())


@dataclass
class _Unflushed:
    """What the leader published and has not yet deleted (`ids`) or NOTIFYed to other
    processes (`topics`)."""
    ids: list[int] = field(default_factory=list)
    topics: set[str] = field(default_factory=set)
    since: float = 0.0  # when the oldest of `ids` was published (time.monotonic)

    def add(self, ids: list[int], topics: set[str]) -> None:
        if ids and not self.ids:
            self.since = time.monotonic()
        self.ids += ids
        self.topics |= topics

    def due(self, settings: Settings) -> bool:
        """Whether the next read should delete `ids`: enough of them, or old enough."""
        return bool(self.ids) and (len(self.ids) >= settings.outbox_flush_rows
                                   or time.monotonic() - self.since >= settings.outbox_flush_ms / 1000)


class OutboxRelay:
    def __init__(self, settings: Settings, schema: str, producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.schema = schema
        self.producer = producer
        self.channel = f"{schema}_outbox"
        self._wake = asyncio.Event()
        self.is_leader = False
        self.published = 0  # rows published since start (shared/recycle.py counts what the broker holds)
        self.linger_s = settings.outbox_linger_ms / 1000
        # Closed by `pause` (shared/recycle.py): the relay stops between batches.
        self._open = asyncio.Event()
        self._open.set()
        self._stopped = asyncio.Event()

    def linger(self, ms: int) -> None:
        """Wait `ms` when woken before reading (OUTBOX_LINGER_MS until then): where every service
        is in one process (tillstream/host.py), no request waits for the broker, so the relay
        may gather longer and publish in fewer rounds; only subscribers hear later."""
        self.linger_s = max(ms, 0) / 1000

    async def run(self) -> None:
        """Run forever: wait for leadership, then publish; reconnect after any failure."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; retrying", extra={"fields": {"schema": self.schema}})
                self.is_leader = False
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        # Its only writes delete published rows. Losing one in a crash publishes that row
        # again, which consumers tolerate, so they need not wait for a WAL flush.
        conn = await db.connect(self.settings.require_database_url(), self.schema, synchronous_commit="off")
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", relay_lock_key(self.schema)):
                await asyncio.sleep(self.settings.outbox_poll_interval_s)
            self.is_leader = True
            await conn.add_listener(self.channel, lambda *_: self._wake.set())
            wakeup.listener.relay_here(conn.get_server_pid())
            log.info("outbox relay leading", extra={"fields": {"schema": self.schema}})
            await self._relay(conn)
        finally:
            self.is_leader = False
            wakeup.listener.relay_here(conn.get_server_pid(), leading=False)
            await conn.close()

    async def _relay(self, conn: asyncpg.Connection) -> None:
        unflushed = _Unflushed()
        try:
            while True:
                if not self._open.is_set():
                    await self._flush(conn, unflushed)  # nothing published lingers while paused
                    self._stopped.set()
                    await self._open.wait()
                    self._stopped.clear()
                self._wake.clear()
                rows = await self._read_next(conn, unflushed)
                acked = await self._publish(rows, conn)
                published = set(acked)
                topics = {r["topic"] for r in rows if r["id"] in published}
                unflushed.add(acked, topics)
                wakeup.listener.published_here(topics)
                if len(rows) == self.settings.outbox_batch_size:
                    continue  # a full batch: more waiting; the next read carries the delete and the NOTIFY
                if self._wake.is_set():  # appends came while publishing: gather what comes for a moment too
                    if self.linger_s > 0:
                        await asyncio.sleep(self.linger_s)
                    continue
                if unflushed.ids and not await self._woken(self.settings.outbox_flush_ms / 1000):
                    await self._flush(conn, unflushed)  # idle: on their own
                if not self._wake.is_set():
                    await self._woken(self.settings.outbox_poll_interval_s)
                if self.linger_s > 0 and self._open.is_set():
                    await asyncio.sleep(self.linger_s)  # woken from idle: gather
        finally:  # stopped, or the broker failed: what was published need not be published again
            if unflushed.ids and not conn.is_closed():
                try:
                    await self._flush(conn, unflushed, timeout=2.0)
                except Exception as exc:  # the connection is what failed: the next leader publishes them again
                    log.info("outbox relay left published rows undeleted", extra={"fields": {
                        "schema": self.schema, "rows": len(unflushed.ids), "error": repr(exc)}})

    async def _woken(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for an append's NOTIFY (or `pause`); whether one came."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_s)
            return True
        except asyncio.TimeoutError:
            return False

    async def pause(self) -> None:
        """Stop publishing; returns once the batch being published (if any) is acknowledged
        and what was published is deleted. Appends go on filling the outbox meanwhile."""
        self._open.clear()
        self._wake.set()
        while self.is_leader and not self._stopped.is_set():
            await asyncio.sleep(0.005)

    def resume(self) -> None:
        self._open.set()

    async def _flush(self, conn: asyncpg.Connection, unflushed: _Unflushed, timeout: float | None = None) -> None:
        """Delete what was published and NOTIFY other processes' consumers of it: one statement."""
        if unflushed.ids or unflushed.topics:
            await conn.execute(FLUSH, unflushed.ids, wakeup.CHANNEL, sorted(unflushed.topics), timeout=timeout)
        unflushed.ids, unflushed.topics = [], set()

    async def _read_next(self, conn: asyncpg.Connection, unflushed: _Unflushed) -> list[asyncpg.Record]:
        """The oldest rows neither published by this leader nor held; in the same statement,
        NOTIFY what was published since the last statement and, when due, delete it."""
        deleting = unflushed.ids if unflushed.due(self.settings) else []
        rows = await conn.fetch(READ_NEXT, self.settings.outbox_batch_size, deleting, wakeup.CHANNEL,
                                sorted(unflushed.topics), unflushed.ids)
        unflushed.topics = set()
        if deleting:
            unflushed.ids = []
        return [r for r in rows if r["id"] is not None]

    async def _publish(self, rows: list[asyncpg.Record], conn: asyncpg.Connection) -> list[int]:
        """Send `rows` and wait for every acknowledgement: their ids, now safe to delete
        (rows refused for good are parked on `conn` and left out)."""
        if not rows:
            return []
        # Enqueue the whole batch (kept in order per partition by the producer), then
        # wait for every acknowledgement before anything is deleted.
        sent: list[tuple[asyncpg.Record, asyncio.Future]] = []
        refused: list[tuple[asyncpg.Record, Exception]] = []
        held_keys: set[str] = set()  # refused in this batch: their later rows wait behind the parked one
        for r in rows:
            if r["key"] in held_keys:
                continue
            # Rows written before an event's newer version (or a dead letter sent again)
            # leave at the newest version: never with what it dropped.
            value, headers = newest_message(bytes(r["value"]), [(k, v.encode()) for k, v in r["headers"]])
            try:
                sent.append((r, await self.producer.send(r["topic"], value=value, key=r["key"].encode(),
                                                         headers=headers)))
            except KafkaError as exc:
                if _retriable(exc):
                    raise
                refused.append((r, exc))
                held_keys.add(r["key"])
        outcomes = await asyncio.gather(*(ack for _, ack in sent), return_exceptions=True)
        for (r, _), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, KafkaError) or _retriable(outcome):
                    raise outcome
                refused.append((r, outcome))
        # A refusal known only from the acknowledgement (the broker's own size limit) comes for
        # the partition's whole record batch, so the key's later rows in it are parked with it
        # (ones the producer had put in a later record batch may still get through: only a
        # broker limit below the producer's max_request_size refuses that way).
        if refused:
            await self._park(conn, refused)
        parked = {row["id"] for row, _ in refused}
        acked = [r["id"] for r, _ in sent if r["id"] not in parked]
        metrics.OUTBOX_PUBLISHED.labels(self.schema).inc(len(acked))
        self.published += len(acked)
        return acked

    async def _park(self, conn: asyncpg.Connection, refused: list[tuple[asyncpg.Record, Exception]]) -> None:
        for row, exc in refused:
            log.error("outbox row refused by the broker; parked", extra={"fields": {
                "schema": self.schema, "outbox_id": row["id"], "bytes": len(row["value"]), "error": repr(exc)}})
        await conn.executemany("UPDATE outbox SET parked_at = now(), error = $2 WHERE id = $1",
                               [(row["id"], repr(exc)[:2000]) for row, exc in refused])


# A row is held while an earlier row of its key is parked.
NOT_HELD = ("parked_at IS NULL AND NOT EXISTS (SELECT 1 FROM outbox AS parked WHERE parked.parked_at IS NOT NULL"
            " AND parked.key = outbox.key AND parked.id < outbox.id)")

# $1 rows at most, after deleting $2 and NOTIFYing $3 of the topics $4, leaving out $5 (what
# the leader published: the read sees the table as it was before the delete). Data-modifying
# CTEs always run, but a SELECT one only as far as it is read, so the NOTIFYs are counted in
# the outer side of a left join, which is read whole even when no row comes: then a single
# row of NULLs.
READ_NEXT = (
    "WITH deleted AS (DELETE FROM outbox WHERE id = ANY($2::bigint[])),"
    " notified AS (SELECT count(*) AS n FROM (SELECT pg_notify($3, topic) FROM unnest($4::text[]) AS topic) AS t)"
    " SELECT next.* FROM notified LEFT JOIN ("
    f"  SELECT id, topic, key, value, headers FROM outbox WHERE {NOT_HELD} AND id <> ALL($5::bigint[])"
    "  ORDER BY id LIMIT $1) AS next ON true ORDER BY next.id")

FLUSH = ("WITH deleted AS (DELETE FROM outbox WHERE id = ANY($1::bigint[]))"
         " SELECT pg_notify($2, topic) FROM unnest($3::text[]) AS topic")

# The broker's refusals of a message itself, which no retry can change.
REFUSED_FOR_GOOD = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, InvalidMessageError,
                    CorruptRecordException, InvalidTopicError, InvalidTimestampError)


def _retriable(exc: Exception) -> bool:
    """Anything but a refusal of the message itself may pass if sent again (the broker away,
    a timeout): only those refusals are parked."""
    return not isinstance(exc, REFUSED_FOR_GOOD)


async def outbox_status(conn: asyncpg.Connection | asyncpg.Pool, schema: str | None = None) -> dict:
    """Unpublished rows and the age of the oldest, the rows parked after the broker refused
    them, with their errors, and how many rows each holds back (of `schema`, else the search
    path's). Unpublished: what the outbox holds, parked rows apart, which includes what the
    relay published in the last OUTBOX_FLUSH_MS or so (it deletes it in batches)."""
    table = f'"{db.check_identifier(schema)}".outbox' if schema else "outbox"
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE parked_at IS NULL) AS unpublished,"
        f" extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)) AS oldest_age_s,"
        f" count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,"
        f" count(*) FILTER (WHERE parked_at IS NULL AND EXISTS (SELECT 1 FROM {table} AS p WHERE"
        f"  p.parked_at IS NOT NULL AND p.key = o.key AND p.id < o.id)) AS held FROM {table} AS o")
    parked = await conn.fetch(
        f"SELECT id, topic, key, length(value) AS bytes, error, parked_at,"
        f" (SELECT count(*) FROM {table} AS later WHERE later.parked_at IS NULL AND later.key = p.key"
        f"  AND later.id > p.id) AS holding"
        f" FROM {table} AS p WHERE parked_at IS NOT NULL ORDER BY id LIMIT 20")
    return {"unpublished": row["unpublished"], "oldest_age_s": float(row["oldest_age_s"] or 0.0),
            "parked": row["parked"], "held": row["held"],
            "parked_rows": [dict(r) for r in parked]}


async def release_parked(conn: asyncpg.Connection, schema: str, *, discard: bool,
                         ids: list[int] | None = None) -> list[int]:
    """An operator's end to parked rows (`ids`, or all of them): publish them again (the
    broker's limit raised, say; one refused again is parked again) or discard them (the
    events stay in the store, never published). Either way the rows their keys held flow
    again: the relay is woken. Returns the rows released."""
    table = f'"{db.check_identifier(schema)}".outbox'
    chosen = "parked_at IS NOT NULL AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))"
    release = f"DELETE FROM {table} WHERE {chosen}" if discard else \
        f"UPDATE {table} SET parked_at = NULL, error = NULL WHERE {chosen}"
    released = await conn.fetch(f"WITH released AS ({release} RETURNING id), woken AS (SELECT pg_notify($2, ''))"
                                " SELECT id FROM released, woken", ids, f"{schema}_outbox")
    return sorted(r["id"] for r in released)
