"""A consumer group's handler of one subscription: idempotent, retried, dead-lettered.

For each message the handler runs in one PostgreSQL transaction that first records the
event id in `processed_events`; a duplicate delivery finds the record and changes nothing
(and what an inline projection or a call's reply applied in this process is passed over
without a transaction: shared/eventstore.py; a message that a call of this process is
answering right now waits for it first, holding no slot: shared/under_way.py). A message
that still fails after `consumer_max_attempts` goes to `<topic>.dlq` (and the `dead_letters`
table) with the error, and the consumer moves on. Messages of one key that wait together
(shared/inflight.py) are applied in one transaction with one multi-row record, up to the
first whose handling appends events.

A handler whose whole work is one SQL statement may say so (its `statement` form, a
`Statement`): the record and the work then go as one statement, no BEGIN nor COMMIT (atomic
as any statement: a failure leaves neither, and the event is handled again as above), and the
transaction is left for the events (or runs) the form declines.
"""
from __future__ import annotations

import asyncio
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable

import asyncpg
from aiokafka import AIOKafkaProducer, ConsumerRecord

from shared import context, db, metrics
from shared.contracts.dead_letters import notice_type
from shared.envelope import DomainEvent, EventEnvelope, newest_message, upcast
from shared.eventstore import ConcurrencyConflict, EventStore, recording_appends
from shared.faults import hold_point
from shared.inline import PREMISE_FAILED, applied_here
from shared.kafka import dlq_topic
from shared.settings import Settings
from shared.under_way import Call, calls

log = logging.getLogger(__name__)

# A handler runs inside the consumer's transaction (opened by the idempotency record, not
# by asyncpg): for a part that may fail alone use `db.savepoint`, not `conn.transaction()`.
Handler = Callable[[asyncpg.Connection, EventEnvelope], Awaitable[None]]


@dataclass(frozen=True)
class Statement:
    """A delivery's whole work as one SQL statement, run after its idempotency record in the
    same statement: `sql` is a `WITH` query named `work` beside `recorded`, whose rows are
    the events this delivery recorded (none for a duplicate). So `sql` must change nothing
    unless `recorded` has rows (`... AND EXISTS (SELECT 1 FROM recorded)`), and must return
    rows (`RETURNING`, or a SELECT: one nobody reads would not run). Its parameters are
    $1..$n (`args`); the record's come after them. A premise it checks may fail it with
    SQLSTATE PREMISE_FAILED (shared/inline.py): nothing is stored, and the handler runs."""
    sql: str
    args: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if "recorded" not in self.sql:
            raise ValueError("a consumer's statement must do its work only if `recorded` has rows")


# A handler's one-statement form: given one message's envelope, or a run of one key's (in
# order), the statement that does what the handler would, or None (the handler runs instead).
StatementForm = Callable[[list[EventEnvelope]], Awaitable[Statement | None]]

# Failures that say nothing about the message itself: retry them without counting.
_TRANSIENT = (ConcurrencyConflict, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_MAX_TRANSIENT_RETRIES = 100
# The database being unreachable is not the message's fault: wait for it, never dead-letter.
_INFRASTRUCTURE = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                   asyncpg.CannotConnectNowError, asyncpg.exceptions.OperatorInterventionError,
                   asyncpg.exceptions.InsufficientResourcesError)


class PoisonMessage(Exception):
    """The message cannot be decoded: no retry can help."""


class _AlreadyRecorded(Exception):
    """A run holds a message handled before: undo the run's transaction."""


def _header(message: ConsumerRecord, name: str) -> str | None:
    for key, value in message.headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None


class IdempotentHandler:
    """One subscription's handler applied to a message: in a transaction opened by its
    idempotency record (`processed_events`, under `name`), retried, and dead-lettered after
    `consumer_max_attempts`."""

    def __init__(self, *, settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer, name: str,
                 handler: Handler, event_types: Iterable[type[DomainEvent]] | None = None,
                 notices: EventStore | None = None, statement: StatementForm | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.producer = producer
        self.name = name
        self.handler = handler
        # The events the handler acts on; the rest of a topic is passed over without a
        # transaction (a handler that ignores an event needs no idempotency record for it).
        self.wanted = frozenset(cls.event_type for cls in event_types) if event_types is not None else None
        # Where a dead letter's notice is appended (the service's own store); None: no notice.
        self.notices = notices
        self.statement = statement

    def wants(self, message: ConsumerRecord) -> bool:
        if self.wanted is None:
            return True
        event_type = _header(message, "event_type")
        return event_type is None or event_type in self.wanted  # no type header: the handler decides

    def applied(self, message: ConsumerRecord) -> bool:
        """Recorded in this process already (inline, or from a call's reply): nothing to do."""
        return applied_here(self.name, _header(message, "event_id") or "")

    def calls_answering(self, message: ConsumerRecord) -> list[Call]:
        """The calls of this process under way that answer `message` for this handler: the
        message's own event (the order's DeliveryRequested that it calls shipping under), or the
        event that caused it (a participant's answer to the saga's call)."""
        return calls(self.name, (_header(message, "event_id"), _header(message, "causation_id")))

    async def handle_run(self, messages: list[ConsumerRecord]) -> None:
        await hold_point(f"consumer.{self.name}")  # fault injection: this consumer held still
        await self._handle_run(messages)

    async def _handle_run(self, messages: list[ConsumerRecord]) -> None:
        """Messages of one key, in order. Those it acts on are applied in as few transactions
        as `_apply_run` allows; if a run fails, its messages are applied one by one, each
        with its own retries and dead letter, so one bad message holds back no other."""
        wanted = []
        for message in messages:
            if not self.wants(message):
                metrics.CONSUMED.labels(self.name, "ignored").inc()
            elif self.applied(message):
                metrics.CONSUMED.labels(self.name, "applied_inline").inc()
            else:
                wanted.append(message)
        while len(wanted) > 1:
            try:
                applied = await self._apply_run(wanted)
            except asyncio.CancelledError:
                raise
            except Exception:
                break
            if not applied:
                break
            wanted = wanted[applied:]
        for message in wanted:
            await self.handle_message(message)

    async def handle_message(self, message: ConsumerRecord) -> None:
        started = time.perf_counter()
        attempts = transient = 0
        while True:
            try:
                envelope = decode(message)
                outcome = await self._apply(envelope)
                metrics.CONSUMED.labels(self.name, outcome).inc()
                metrics.HANDLE_SECONDS.labels(self.name).observe(time.perf_counter() - started)
                return
            except asyncio.CancelledError:
                raise
            except _INFRASTRUCTURE as exc:
                log.warning("database unavailable; waiting", extra={"fields": {"error": repr(exc)}})
                await asyncio.sleep(1.0)
            except Exception as exc:
                if isinstance(exc, _TRANSIENT) and transient < _MAX_TRANSIENT_RETRIES:
                    transient += 1
                    await asyncio.sleep(0.001 * min(transient, 50))
                    continue
                attempts += 1
                if isinstance(exc, PoisonMessage) or attempts >= self.settings.consumer_max_attempts:
                    await self._dead_letter(message, exc, attempts)
                    metrics.CONSUMED.labels(self.name, "dead_lettered").inc()
                    return
                log.warning("handler failed; retrying", extra={"fields": {
                    "consumer": self.name, "topic": message.topic, "offset": message.offset,
                    "attempt": attempts, "error": repr(exc)}})
                await asyncio.sleep(self.settings.consumer_retry_backoff_ms / 1000 * attempts)

    async def _apply_run(self, messages: list[ConsumerRecord]) -> int:
        """Apply a key's messages in one transaction with one idempotency record of them all
        (a `BEGIN`, an insert and a `COMMIT` for the run, not for each), and return how many
        were applied: all, unless a message's handling appended events. An append holds its
        store's table lock until commit, and a later message's row locks taken while holding
        it could deadlock with a command that takes the same row first and the lock after;
        so the transaction ends there, and the rest is left for the next run. 0: some were
        recorded already (a redelivery), for `handle_message` to sort out one by one. A run
        the handler's statement form takes is applied in its one statement instead."""
        envelopes = [decode(message) for message in messages]
        started = time.perf_counter()
        if len({e.event_id for e in envelopes}) < len(envelopes):
            return 0  # a message delivered twice in one run: one by one
        outcome = await self._apply_statement(envelopes)
        if outcome == "duplicate":
            return 0
        if outcome == "processed":
            applied = len(envelopes)
            self._measure(applied, started)
            return applied
        try:
            async with self.pool.acquire() as conn, \
                    db.transaction_opened_by(conn, self._record(envelopes)) as status:
                if status != f"INSERT 0 {len(envelopes)}":
                    raise _AlreadyRecorded
                applied = len(envelopes)
                for i, envelope in enumerate(envelopes):
                    with context.caused_by(envelope.correlation_id, str(envelope.event_id)), \
                            recording_appends() as appends:
                        await self.handler(conn, envelope)
                    if appends and i + 1 < len(envelopes):
                        applied = i + 1
                        await conn.execute("DELETE FROM processed_events WHERE consumer = $1"
                                           " AND event_id = ANY($2::uuid[])",
                                           self.name, [e.event_id for e in envelopes[applied:]])
                        break
        except _AlreadyRecorded:
            return 0
        self._measure(applied, started)
        return applied

    def _measure(self, applied: int, started: float) -> None:
        metrics.CONSUMED.labels(self.name, "processed").inc(applied)
        for _ in range(applied):
            metrics.HANDLE_SECONDS.labels(self.name).observe((time.perf_counter() - started) / applied)

    def _record(self, envelopes: list[EventEnvelope]) -> str:
        """The idempotency records of `envelopes`, as a statement that may open a transaction
        (`db.transaction_opened_by`: no parameters, so literals)."""
        values = ", ".join(f"({db.literal(self.name)}, {db.literal(e.event_id)})" for e in envelopes)
        return f"INSERT INTO processed_events (consumer, event_id) VALUES {values} ON CONFLICT DO NOTHING"

    async def _apply_statement(self, envelopes: list[EventEnvelope]) -> str | None:
        """The record of `envelopes` and the handler's work on them in one statement, if its
        statement form gives one: "processed", or "duplicate" when it found one of them
        recorded before (then it changed nothing); None when there is no such statement (or
        its premise failed, which stores nothing): the handler's transaction is for that."""
        if self.statement is None or (statement := await self.statement(envelopes)) is None:
            return None
        n = len(statement.args)
        consumer, ids = f"${n + 1}", f"${n + 2}::uuid[]"
        # A run is recorded whole or not at all: nothing if one of its events was recorded
        # before, and a statement that fails on the unique key if one is recorded meanwhile
        # (another instance, say); a single event's record waits for such a one and does nothing.
        guard = " ON CONFLICT DO NOTHING" if len(envelopes) == 1 else \
            f" WHERE NOT EXISTS (SELECT 1 FROM processed_events WHERE consumer = {consumer} AND event_id = ANY({ids}))"
        sql = (f"WITH recorded AS (INSERT INTO processed_events (consumer, event_id) SELECT {consumer}, unnest({ids})"
               f"{guard} RETURNING event_id), work AS ({statement.sql})"
               " SELECT (SELECT count(*) FROM recorded) AS recorded, (SELECT count(*) FROM work) AS worked")
        try:
            row = await self.pool.fetchrow(sql, *statement.args, self.name, [e.event_id for e in envelopes])
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != PREMISE_FAILED:
                raise
            return None
        return "processed" if row["recorded"] == len(envelopes) else "duplicate"

    async def _apply(self, envelope: EventEnvelope) -> str:
        with context.caused_by(envelope.correlation_id, str(envelope.event_id)):
            if (outcome := await self._apply_statement([envelope])) is not None:
                return outcome
            # The idempotency record opens the transaction (one round trip with its BEGIN).
            async with self.pool.acquire() as conn, db.transaction_opened_by(conn, self._record([envelope])) as status:
                if status != "INSERT 0 1":
                    return "duplicate"
                await self.handler(conn, envelope)
                return "processed"

    async def _dead_letter(self, message: ConsumerRecord, exc: Exception, attempts: int) -> None:
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        # The copies hold the event at its newest version (an older one may carry a credential).
        value, original_headers = newest_message(message.value or b"", list(message.headers or ()))
        headers = original_headers + [
            ("dlq_error", error.encode()),
            ("dlq_consumer", self.name.encode()),
            ("dlq_original_topic", message.topic.encode()),
            ("dlq_original_partition", str(message.partition).encode()),
            ("dlq_original_offset", str(message.offset).encode()),
            ("dlq_failed_at", datetime.now(timezone.utc).isoformat().encode()),
        ]
        key = message.key.decode(errors="replace") if message.key else None
        async with self.pool.acquire() as conn, conn.transaction():
            letter_id = await conn.fetchval(
                'INSERT INTO dead_letters (consumer, topic, partition, "offset", key, value, headers, error, attempts)'
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                self.name, message.topic, message.partition, message.offset, key, value,
                [[k, v.decode(errors="replace")] for k, v in headers], error, attempts,
            )
            if self.notices is not None:
                await self._publish_notice(self.notices, conn, letter_id, message, key, error)
        await self.producer.send_and_wait(dlq_topic(message.topic), value=value if message.value is not None else None,
                                          key=message.key, headers=headers)
        log.error("message dead-lettered", extra={"fields": {
            "consumer": self.name, "topic": message.topic, "partition": message.partition,
            "offset": message.offset, "error": error}})

    async def _publish_notice(self, store: EventStore, conn: asyncpg.Connection, letter_id: int,
                              message: ConsumerRecord, key: str | None, error: str) -> None:
        """Tell whoever waits for this message's effects that none will come (a saga, say):
        a `<service>.MessageDeadLettered` event on this service's topic, keyed by its own
        stream id (`<consumer>/<letter id>`), not the message's key: an order's key carries
        the order's stream alone. The saga finds its instance by the message's event id."""
        headers = dict(message.headers or ())
        notice = notice_type(store.schema)(consumer=self.name, original_event_id=headers.get("event_id", b"").decode(),
                                           original_type=headers.get("event_type", b"").decode(errors="replace"),
                                           original_key=key, error=error[:2000])
        await store.append(conn, aggregate_type="DeadLetter", aggregate_id=f"{self.name}/{letter_id}",
                           expected_version=0, events=[notice])


def decode(message: ConsumerRecord) -> EventEnvelope:
    try:
        return upcast(EventEnvelope.from_json(message.value))
    except (ValueError, TypeError) as exc:
        raise PoisonMessage(f"undecodable message: {exc}") from exc
