"""Append-only event store on PostgreSQL with a gap-free global order and an outbox.

One table per service schema (see sql/001_platform.sql). `append` runs inside the
caller's transaction, so a consumer's idempotency record, its effects, the events and
the outbox rows to publish all commit together or not at all.
"""
from __future__ import annotations

import contextvars
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterator, Sequence

import asyncpg

from shared import db, metrics
from shared import inline as inline_projections
from shared.db import check_identifier
from shared.envelope import DomainEvent, EventEnvelope, envelope_for, upcast
from shared.errors import DomainError

# An envelope's columns in a store's `events` table (operators' tools read them too).
METADATA_COLUMNS = ("position, event_id, aggregate_type, aggregate_id, sequence, type, version, "
                    "occurred_at, correlation_id, causation_id")
COLUMNS = METADATA_COLUMNS + ", payload"


# One round trip (sql/003_append_events.sql, 009_event_keys.sql): the writers' lock, the
# events (with the key and topic they are published under), their outbox rows and the
# relay's wake-up.
APPEND = ("SELECT stored_position AS position, stored_event_id AS event_id"
          " FROM append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)")


# The largest event a command may store: well within what Kafka accepts in one message
# (1 MiB by default), so the outbox relay never holds an event the broker refuses.
MAX_EVENT_BYTES = 256 * 1024

# Updates read models with new events, inside the transaction that stores them.
Projector = Callable[[asyncpg.Connection, list[EventEnvelope]], Awaitable[None]]


@dataclass(frozen=True)
class StatementProjection:
    """A projection that can also travel in the append's own statement, so an append outside a
    transaction that projects is still one round trip, with no BEGIN/COMMIT (issue #26.3).
    `changes` gives the read models' changes for the store's SQL function `function` (in the
    store's schema: the append's arguments, then the changes; it applies them, then calls
    append_events), or None when it cannot tell them without reading: then the append runs in
    a transaction with `project`, as it does whenever it is already in one."""
    project: Projector
    changes: Callable[[list[EventEnvelope]], Awaitable[list | dict | None]]
    function: str
    # A function (aggregate id text, position bigint) of the read model's rows as the write left
    # them, joined LATERAL to `function`'s rows within `reading_the_write()`: a command's answer
    # read by its own statement.
    reading_function: str | None = None

    async def __call__(self, conn: asyncpg.Connection, envelopes: list[EventEnvelope]) -> None:
        await self.project(conn, envelopes)


@dataclass(frozen=True)
class Alongside:
    """A write of the command's own that must commit with its events or not at all (the test
    gateway's card token with the payment that uses it): a data-modifying CTE of the append's
    statement, so the append stays one statement with no BEGIN/COMMIT. `sql` numbers its
    parameters from $1. Run as a statement of its own when the append is in a transaction
    that another projection needs anyway."""
    sql: str
    args: tuple

    async def __call__(self, conn: asyncpg.Connection, envelopes: list[EventEnvelope]) -> None:
        await conn.execute(self.sql, *self.args)

    def prefixed(self, statement: str, before: int) -> str:
        shifted = re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + before}", self.sql)
        return f"WITH alongside AS ({shifted}) {statement}"


_write_reads: contextvars.ContextVar[list | None] = contextvars.ContextVar("write_reads", default=None)


@contextmanager
def reading_the_write() -> Iterator[list]:
    """A list that gets the first row of a one-statement projecting append made within the
    block by a StatementProjection with a `reading_function` (what its write left in the read
    model); stays empty when none was made (nothing recorded, or the transactional path).
    Within it, such an append inside a transaction goes as the one statement too (only that
    statement can read what it wrote): the row is then the read model as the transaction had
    it after the write, which the caller takes as its answer once the transaction commits."""
    read: list = []
    token = _write_reads.set(read)
    try:
        yield read
    finally:
        _write_reads.reset(token)


# The events stored by the appends made within a block: a consumer applying a run of messages
# in one transaction (shared/consumer.py) ends it after one (an append holds its store's table
# lock until commit, so the run's transaction ends rather than taking row locks while holding
# it), and a saga's step answers with what its body stored (shared/steps.py) instead of
# querying for it.
_appends: contextvars.ContextVar[list[EventEnvelope] | None] = contextvars.ContextVar("appends", default=None)


@contextmanager
def recording_appends() -> Iterator[list[EventEnvelope]]:
    """A list of the envelopes stored by every append made within the block (by this task,
    and by tasks it starts), in order; a block around it sees them too."""
    seen: list[EventEnvelope] = []
    outer = _appends.get()
    token = _appends.set(seen)
    try:
        yield seen
    finally:
        _appends.reset(token)
        if outer is not None:
            outer.extend(seen)


def _envelopes(events: Sequence[DomainEvent], aggregate_type: str, aggregate_id: str,
               expected_version: int) -> list[EventEnvelope]:
    """`events` as the stream's next envelopes, after `expected_version`."""
    return [envelope_for(e, aggregate_type=aggregate_type, aggregate_id=aggregate_id,
                         sequence=expected_version + i + 1) for i, e in enumerate(events)]


class ConcurrencyConflict(Exception):
    """Another writer appended to the stream first: reload the aggregate and retry."""

    def __init__(self, aggregate_type: str, aggregate_id: str, expected_version: int) -> None:
        super().__init__(f"{aggregate_type} {aggregate_id} moved past version {expected_version}")
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version


def stored_envelope(row: asyncpg.Record) -> EventEnvelope:
    """A row of COLUMNS as stored, at the version it was written in."""
    # pydantic-core validates a row in about half the time `model_construct` takes.
    return EventEnvelope.model_validate(dict(row))


def _row_to_envelope(row: asyncpg.Record) -> EventEnvelope:
    return upcast(stored_envelope(row))


class EventStore:
    """The store of one service. Its events are published to `topic` by the outbox relay."""

    def __init__(self, schema: str, topic: str) -> None:
        self.schema = schema
        self.topic = topic
        self.notify_channel = f"{schema}_outbox"
        # Every statement names the schema: an append may run on another service's connection
        # (an inline projection, below), whose search_path is that service's.
        self.table = f'"{schema}".events'
        if self.append_statement is APPEND:
            self.append_statement = APPEND.replace(" FROM append_events(", f' FROM "{schema}".append_events(')
        # After an inline projection: the connection's own search_path back, in the same statement.
        self._restoring_append = (self.append_statement
                                  + " CROSS JOIN LATERAL set_config('search_path', $17, true) AS restored")

    # Takes `LOCK TABLE events IN EXCLUSIVE MODE`, held until commit: positions are handed
    # out and become visible in the same order. Plain SELECTs (ACCESS SHARE) are not
    # blocked, so readers never wait.
    append_statement = APPEND

    async def append(
        self,
        conn: asyncpg.Connection,
        *,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        events: Sequence[DomainEvent],
        key: str | None = None,
        topic: str | None = None,
        project: Projector | None = None,
    ) -> list[EventEnvelope]:
        """Append `events` after `expected_version`; raise ConcurrencyConflict if taken.

        `key` is the Kafka message key (the order number); it defaults to the aggregate id.
        `topic` is where they are published; it defaults to the store's. Both are stored with
        the events (`message_key`, `message_topic`), so a replay publishes them there again.
        `project` updates read models with the new envelopes in the same transaction, before
        the table lock is taken: call `append` last in a transaction, and the lock is held
        only for the insert and the commit. Without `project`, an append outside a transaction
        is one statement, atomic on its own (events, outbox rows and wake-up commit together);
        with a StatementProjection it is too, the projection's changes in the same statement,
        and so is such an append inside the caller's transaction (no statement per change).
        """
        inline = inline_projections.PROJECTIONS.get(self.schema)
        alongside = project if isinstance(project, Alongside) else None
        if alongside is not None and conn.is_in_transaction():
            alongside = None  # in the caller's transaction: it runs as a projector, before the append
        elif alongside is not None:
            project = None
        if inline and events and project is None and conn.is_in_transaction():
            return await self._project_then_append(conn, None, aggregate_type=aggregate_type,
                                                   aggregate_id=aggregate_id, expected_version=expected_version,
                                                   events=events, key=key, topic=topic)
        if inline and events and project is None:  # outside a transaction: one statement, on a premise
            envelopes = _envelopes(events, aggregate_type, aggregate_id, expected_version)
            riding = await inline_projections.riding(inline, envelopes, premised=True)
            if riding is not None:  # every projection rides in the statement (or none wants them)
                try:
                    return await self.append_envelopes(conn, envelopes, key=key or aggregate_id, topic=topic,
                                                       expected_version=expected_version, riding=riding,
                                                       alongside=alongside)
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate != inline_projections.PREMISE_FAILED:
                        raise
                    # Nothing was stored (the statement was its own transaction): the handlers decide.
            async with db.transaction(conn):  # the projections commit with the events, or neither does
                if alongside is not None:
                    await alongside(conn, envelopes)
                return await self._append_handled(conn, inline, envelopes, key=key or aggregate_id, topic=topic,
                                                  expected_version=expected_version)
        if alongside is not None:
            return await self.append_envelopes(conn, _envelopes(events, aggregate_type, aggregate_id, expected_version),
                                               key=key or aggregate_id, topic=topic,
                                               expected_version=expected_version, alongside=alongside) if events else []
        if isinstance(project, StatementProjection):  # one statement if it can be, in a transaction or not
            return await self._append_projecting(conn, project, aggregate_type=aggregate_type,
                                                 aggregate_id=aggregate_id, expected_version=expected_version,
                                                 events=events, key=key, topic=topic)
        if project is not None and not conn.is_in_transaction():
            raise RuntimeError("an append that projects must run inside a transaction")
        return await self._project_then_append(conn, project, aggregate_type=aggregate_type,
                                               aggregate_id=aggregate_id, expected_version=expected_version,
                                               events=events, key=key, topic=topic)

    async def _project_then_append(self, conn: asyncpg.Connection, project: Projector | None, *, aggregate_type: str,
                                   aggregate_id: str, expected_version: int, events: Sequence[DomainEvent],
                                   key: str | None, topic: str | None) -> list[EventEnvelope]:
        """`project`'s statements, then the append, in the caller's transaction: the inline
        projections ride in it when they can tell their changes (what they decide besides, first),
        else their handlers run before it."""
        if not events:
            return []
        envelopes = _envelopes(events, aggregate_type, aggregate_id, expected_version)
        if project is not None:
            await project(conn, envelopes)
        inline = inline_projections.PROJECTIONS.get(self.schema)
        if inline:  # in the caller's transaction: the projections ride in the append if they can tell their changes
            riding = await inline_projections.riding(inline, envelopes, premised=False)
            if riding is not None:
                await inline_projections.before_riding(conn, riding)
                return await self.append_envelopes(conn, envelopes, key=key or aggregate_id, topic=topic,
                                                   expected_version=expected_version, riding=riding)
        return await self._append_handled(conn, inline or [], envelopes, key=key or aggregate_id, topic=topic,
                                          expected_version=expected_version)

    async def _append_handled(self, conn: asyncpg.Connection, inline: list[inline_projections.InlineProjection],
                              envelopes: list[EventEnvelope], *, key: str, topic: str | None,
                              expected_version: int) -> list[EventEnvelope]:
        """The inline projections' handlers, then the append, in the caller's transaction. After
        the store's own projection (it only inserts rows of its own), before its table lock:
        everywhere the order view's row and the order's stream are locked first."""
        switched = await inline_projections.apply_handlers(conn, inline, envelopes) if inline else False
        return await self.append_envelopes(conn, envelopes, key=key, topic=topic,
                                           expected_version=expected_version, restore_search_path=switched)

    async def _append_projecting(self, conn: asyncpg.Connection, projection: StatementProjection, *,
                                 aggregate_type: str, aggregate_id: str, expected_version: int,
                                 events: Sequence[DomainEvent], key: str | None,
                                 topic: str | None) -> list[EventEnvelope]:
        """The append and its projection in one statement, when the projection can tell its
        changes without reading and no other service projects this store inline here."""
        if not events:
            return []
        if not inline_projections.PROJECTIONS.get(self.schema):
            envelopes = _envelopes(events, aggregate_type, aggregate_id, expected_version)
            changes = await projection.changes(envelopes)
            if changes is not None:
                read = _write_reads.get() if projection.reading_function else None
                return await self.append_envelopes(conn, envelopes, key=key or aggregate_id, topic=topic,
                                                   expected_version=expected_version,
                                                   projected=(projection.function, changes),
                                                   reading=projection.reading_function if read is not None else None,
                                                   read_into=read)
        if conn.is_in_transaction():  # the caller's (reading the write): its statements in it
            return await self._project_then_append(conn, projection, aggregate_type=aggregate_type,
                                                   aggregate_id=aggregate_id, expected_version=expected_version,
                                                   events=events, key=key, topic=topic)
        async with db.transaction(conn):  # as any projection, in the append's transaction
            return await self.append(conn, aggregate_type=aggregate_type, aggregate_id=aggregate_id,
                                     expected_version=expected_version, events=events, key=key, topic=topic,
                                     project=projection)

    def _projecting_statement(self, function: str, reading: str | None = None) -> str:
        statement = (f'SELECT w.stored_position AS position, w.stored_event_id AS event_id'
                     f'{", r.*" if reading else ""} FROM "{self.schema}".{check_identifier(function)}'
                     f'({", ".join(f"${i}" for i in range(1, 18))}) AS w')
        if reading:
            statement += (f' LEFT JOIN LATERAL "{self.schema}".{check_identifier(reading)}(($3::text[])[1],'
                          " w.stored_position) AS r ON true")
        return statement

    async def append_envelopes(self, conn: asyncpg.Connection, envelopes: Sequence[EventEnvelope],
                               *, key: str, expected_version: int, topic: str | None = None,
                               restore_search_path: bool = False, projected: tuple[str, list | dict] | None = None,
                               riding: list[inline_projections.Riding] | None = None, reading: str | None = None,
                               read_into: list | None = None,
                               alongside: Alongside | None = None) -> list[EventEnvelope]:
        """`projected`: a StatementProjection's function and changes, to append with (one statement);
        `riding`: inline projections applied in the statement before the append; `reading` (with
        `projected`): its reading function, whose answer `read_into` gets (the first row)."""
        messages = [e.to_json() for e in envelopes]
        too_large = max(map(len, messages), default=0)
        if too_large > MAX_EVENT_BYTES:
            # Refused here rather than by the broker later, where it would be parked unpublished.
            raise DomainError("event_too_large", f"An event of {too_large} bytes is more than the"
                              f" {MAX_EVENT_BYTES} an event may hold.", status=413)
        extra: list = []
        if riding:
            statement = inline_projections.riding_statement(self.append_statement, riding)
            extra = [value for projection, wanted, changes in riding
                     for value in (projection.consumer, [e.event_id for e in wanted], changes)]
        elif projected is not None:
            statement, extra = self._projecting_statement(projected[0], reading), [projected[1]]
        elif restore_search_path:
            statement, extra = self._restoring_append, [check_identifier(self.schema)]
        else:
            statement = self.append_statement
        if alongside is not None:
            statement, extra = alongside.prefixed(statement, 16 + len(extra)), [*extra, *alongside.args]
        try:
            positions = await conn.fetch(
                statement,
                [e.event_id for e in envelopes], [e.aggregate_type for e in envelopes],
                [e.aggregate_id for e in envelopes], [e.sequence for e in envelopes],
                [e.type for e in envelopes], [e.version for e in envelopes],
                [e.occurred_at for e in envelopes], [e.correlation_id for e in envelopes],
                [e.causation_id for e in envelopes], [e.payload for e in envelopes],
                topic or self.topic, key, messages,
                # As JSON text: asyncpg would read nested lists as array dimensions.
                [json.dumps([[k, v.decode()] for k, v in e.kafka_headers()]) for e in envelopes],
                self.notify_channel,
                None if topic in (None, self.topic) else topic,  # recorded only when not the store's
                *extra,
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "events_stream_sequence":
                first = envelopes[0]
                raise ConcurrencyConflict(first.aggregate_type, first.aggregate_id, expected_version) from exc
            raise
        if riding:
            inline_projections.rode(riding)
        if read_into is not None and positions:
            read_into[:] = [positions[0]]
        by_id = {r["event_id"]: r["position"] for r in positions}
        stored = [e.model_copy(update={"position": by_id[e.event_id]}) for e in envelopes]
        metrics.EVENTS_APPENDED.labels(self.schema).inc(len(stored))
        if (seen := _appends.get()) is not None:
            seen.extend(stored)
        return stored

    async def load_stream(self, conn: asyncpg.Connection | asyncpg.Pool, aggregate_type: str,
                          aggregate_id: str, *, after: int = 0) -> list[EventEnvelope]:
        """A stream's events in sequence, those after sequence `after` only (0: the whole stream)."""
        metrics.STREAM_READS.labels(self.schema, "load").inc()
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM {self.table} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3"
            " ORDER BY sequence", aggregate_type, aggregate_id, after,
        )
        return [_row_to_envelope(r) for r in rows]

    async def answers(self, conn: asyncpg.Connection | asyncpg.Pool, aggregate_type: str, aggregate_id: str,
                      request_id: str, types: Sequence[str]) -> list[EventEnvelope]:
        """The events of a stream of those `types` answering `request_id` (`payload->>'request_id'`),
        in sequence: what a participant answered a saga's step, found again for a repeated call."""
        metrics.STREAM_READS.labels(self.schema, "answers").inc()
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND type = ANY($3::text[])"
            " AND payload->>'request_id' = $4 ORDER BY sequence", aggregate_type, aggregate_id, list(types),
            request_id)
        return [stored_envelope(r) for r in rows]

    async def read_after(self, conn: asyncpg.Connection | asyncpg.Pool, position: int,
                         limit: int = 1000) -> list[EventEnvelope]:
        """Events in global order after `position`: a follower never misses a late commit."""
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM {self.table} WHERE position > $1 ORDER BY position LIMIT $2",
            position, limit,
        )
        return [_row_to_envelope(r) for r in rows]

