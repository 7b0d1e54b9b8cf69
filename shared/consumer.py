"""Idempotent Kafka consumers with retries and a dead-letter queue.

For each message the handler runs in one PostgreSQL transaction that first records the
event id in `processed_events`; a duplicate delivery finds the record and changes
nothing. Offsets are committed only after processing. A message that still fails after
`consumer_max_attempts` goes to `<topic>.dlq` (and the `dead_letters` table) with the
error, and the consumer moves on. A consumer group may carry several handlers (a service's
subscriptions to the same topics): each message is fetched once and handed to all of them at
once, every handler with its own records, retries and dead letters. Messages of one key that
wait together (shared/inflight.py) are applied in one transaction with one multi-row record,
up to the first whose handling appends events.
"""
from __future__ import annotations

import asyncio
import logging
import time
import traceback
from datetime import datetime, timezone
from typing import Awaitable, Callable, Iterable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import CommitFailedError, IllegalStateError

from shared import context, db, metrics, wakeup
from shared.contracts.dead_letters import notice_type
from shared.envelope import DomainEvent, EventEnvelope, newest_message, upcast
from shared.eventstore import ConcurrencyConflict, EventStore, applied_here, counting_appends
from shared.faults import hold_point
from shared.inflight import InFlight
from shared.kafka import dlq_topic, make_consumer
from shared.settings import Settings

log = logging.getLogger(__name__)

# A handler runs inside the consumer's transaction (opened by the idempotency record, not
# by asyncpg): for a part that may fail alone use `db.savepoint`, not `conn.transaction()`.
Handler = Callable[[asyncpg.Connection, EventEnvelope], Awaitable[None]]

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
                 notices: EventStore | None = None) -> None:
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

    def wants(self, message: ConsumerRecord) -> bool:
        if self.wanted is None:
            return True
        event_type = _header(message, "event_type")
        return event_type is None or event_type in self.wanted  # no type header: the handler decides

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
            elif applied_here(self.name, _header(message, "event_id") or ""):
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
        recorded already (a redelivery), for `handle_message` to sort out one by one."""
        envelopes = [decode(message) for message in messages]
        started = time.perf_counter()
        try:
            async with self.pool.acquire() as conn, \
                    db.transaction_opened_by(conn, self._record(envelopes)) as status:
                if status != f"INSERT 0 {len(envelopes)}":
                    raise _AlreadyRecorded
                applied = len(envelopes)
                for i, envelope in enumerate(envelopes):
                    with context.caused_by(envelope.correlation_id, str(envelope.event_id)), \
                            counting_appends() as appends:
                        await self.handler(conn, envelope)
                    if appends and i + 1 < len(envelopes):
                        applied = i + 1
                        await conn.execute("DELETE FROM processed_events WHERE consumer = $1"
                                           " AND event_id = ANY($2::uuid[])",
                                           self.name, [e.event_id for e in envelopes[applied:]])
                        break
        except _AlreadyRecorded:
            return 0
        metrics.CONSUMED.labels(self.name, "processed").inc(applied)
        for _ in range(applied):
            metrics.HANDLE_SECONDS.labels(self.name).observe((time.perf_counter() - started) / applied)
        return applied

    def _record(self, envelopes: list[EventEnvelope]) -> str:
        """The idempotency records of `envelopes`, as a statement that may open a transaction
        (`db.transaction_opened_by`: no parameters, so literals)."""
        values = ", ".join(f"({db.literal(self.name)}, {db.literal(e.event_id)})" for e in envelopes)
        return f"INSERT INTO processed_events (consumer, event_id) VALUES {values} ON CONFLICT DO NOTHING"

    async def _apply(self, envelope: EventEnvelope) -> str:
        with context.caused_by(envelope.correlation_id, str(envelope.event_id)):
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


class EventConsumer:
    """One Kafka consumer group: fetches `topics` and hands every message, in order per
    key, to all of its handlers at once (a service's subscriptions that read the same
    topics share one group: one fetch for all of them; each keeps its own idempotency
    records, retries and dead letters under its own name). Given a single `handler`, the
    group is that handler's, named `group_id`."""

    def __init__(self, *, settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer,
                 group_id: str, topics: list[str], handler: Handler | None = None,
                 event_types: Iterable[type[DomainEvent]] | None = None, background: bool = False,
                 notices: EventStore | None = None, wake_on_publish: bool = False,
                 handlers: list[IdempotentHandler] | None = None) -> None:
        self.settings = settings
        # Idle, wait for the relays' notification instead of polling (shared/wakeup.py).
        self.wake_on_publish = wake_on_publish
        self.group_id = group_id
        self.topics = topics
        if handlers is None:
            if handler is None:
                raise TypeError(f"consumer group {group_id} needs a handler or its handlers")
            handlers = [IdempotentHandler(settings=settings, pool=pool, producer=producer, name=group_id,
                                          handler=handler, event_types=event_types, notices=notices)]
        self.handlers = handlers
        self.background = background
        self.assigned = asyncio.Event()
        # shared/recycle.py empties its topics: `drain` (never idle) until `drained()`, then
        # `freeze` its partitions, then `reposition` them at offset 0.
        self.draining = False
        self._live: AIOKafkaConsumer | None = None  # the running aiokafka consumer
        self._wake: asyncio.Event | None = None
        self._in_flight: InFlight | None = None
        self._committed: dict = {}

    async def run(self) -> None:
        consumer = make_consumer(self.settings, *self.topics, group_id=self.group_id, background=self.background)
        await consumer.start()
        self._live = consumer
        # Woken when a relay publishes to these topics, it need not poll while idle.
        wake = self._wake = await wakeup.listener.subscribe(self.settings.require_database_url(), self.topics) \
            if self.wake_on_publish else None
        # Offsets are committed at most every `kafka_commit_interval_ms` (and when idle), not
        # per batch: a commit is a broker round trip, and handling is idempotent, so all a
        # crash costs is the redelivery of what was handled since the last commit.
        interval = self.settings.kafka_commit_interval_ms / 1000
        in_flight = self._in_flight = InFlight(self.handle_run, asyncio.Semaphore(self.settings.consumer_concurrency))
        committed = self._committed = {}
        last_commit = last_found = time.monotonic()
        # After a backstop (no relay announced anything) one short look is enough: a getmany
        # of the commit interval is ~20 fetches on the embedded broker, which never answers
        # a waiting fetch early; at rest that was most of the broker's CPU.
        probing = False
        try:
            while True:
                in_flight.raise_failure()
                # Fetched messages are handled while the next ones are fetched; past this
                # many open, wait for some to finish first.
                await in_flight.below(self.settings.consumer_max_in_flight)
                if wake is not None:
                    wake.clear()  # before the fetch: a publish from now on wakes the idle wait below
                batch = await consumer.getmany(timeout_ms=self._probe_ms if probing
                                               else self.settings.kafka_commit_interval_ms)
                if consumer.assignment():
                    self.assigned.set()
                for messages in batch.values():
                    for message in messages:
                        self._take(message, in_flight)
                if batch:
                    last_found = time.monotonic()
                if not batch or time.monotonic() - last_commit >= interval:
                    await self._commit(consumer, in_flight.committable(), committed)
                    last_commit = time.monotonic()
                if wake is not None and not batch and not in_flight.workers and not self.draining and \
                        (probing or time.monotonic() - last_found > self.settings.consumer_idle_after_ms / 1000):
                    probing = not await self._idle(consumer, wake)
                    last_found = time.monotonic()
                else:
                    probing = False
        finally:
            if wake is not None:
                wakeup.listener.unsubscribe(wake)
            await in_flight.stop()
            await self._commit(consumer, in_flight.committable(), committed)
            await consumer.stop()

    # Called by shared/recycle.py between turns of `run`, once `drained()`: nothing is in
    # flight and everything fetched is committed, so `run` has no commit of its own to make
    # while these change the positions (and each updates what `run` compares against first).
    def freeze(self) -> None:
        """Stop fetching from its partitions, keeping them (and its place in its group)."""
        consumer, _ = self._running()
        consumer.pause(*consumer.assignment())

    def thaw(self) -> None:
        """Fetch from its partitions again, where it left off."""
        consumer, _ = self._running()
        consumer.resume(*consumer.assignment())

    async def reposition(self) -> None:
        """Its topics were created anew: read every partition from offset 0, commit 0 (so no
        member starts from an offset of the old topics), and fetch again."""
        consumer, in_flight = self._running()
        assigned = consumer.assignment()
        for tp in assigned:
            consumer.seek(tp, 0)
            in_flight.restart(tp)
        self._committed.update({tp: 0 for tp in assigned})
        await consumer.commit({tp: 0 for tp in assigned})
        consumer.resume(*assigned)

    def _running(self) -> tuple[AIOKafkaConsumer, InFlight]:
        """The live consumer and what it has in flight: there are none before `run` starts."""
        if self._live is None or self._in_flight is None:
            raise RuntimeError(f"consumer group {self.group_id} is not running")
        return self._live, self._in_flight

    def drain(self, draining: bool = True) -> None:
        """While draining it never idles (shared/recycle.py): it fetches what is left at once
        rather than after a relay's wake-up (`drained()` commits it)."""
        self.draining = draining
        if draining and self._wake is not None:
            self._wake.set()  # out of an idle wait

    async def drained(self) -> bool:
        """Everything in its partitions fetched, handled and committed (shared/recycle.py).
        Once everything fetched is handled it commits at once rather than at its next turn."""
        consumer, in_flight = self._live, self._in_flight
        if consumer is None or in_flight is None or in_flight.workers or not consumer.assignment():
            return False
        assigned = consumer.assignment()
        ends = await consumer.end_offsets(list(assigned))
        # At or past the end: tansu reports the end of a partition whose last record batch
        # holds several records one short of the offset after it.
        positions = {tp: await consumer.position(tp) for tp in assigned}
        if any(positions[tp] < ends[tp] for tp in assigned) or in_flight.workers:
            return False
        await self._commit(consumer, in_flight.committable(), self._committed)
        # A partition fetched from in this run has its position committed now; one not fetched
        # from started at its committed offset.
        return all(tp not in in_flight.fetched_to or self._committed.get(tp) == positions[tp] for tp in assigned)

    def _take(self, message: ConsumerRecord, in_flight: InFlight) -> None:
        """Hand a fetched message over; one that no handler acts on (by its `event_type`
        header) costs no task."""
        if any(handler.wants(message) for handler in self.handlers):
            in_flight.start(message)
            return
        in_flight.pass_over(message)
        for handler in self.handlers:
            metrics.CONSUMED.labels(handler.name, "ignored").inc()

    @property
    def _probe_ms(self) -> int:
        return 2 * max(self.settings.kafka_background_fetch_max_wait_ms if self.background
                       else self.settings.kafka_fetch_max_wait_ms, 1)

    async def _idle(self, consumer, wake: asyncio.Event) -> bool:
        """Stop fetching until a relay publishes to these topics (True) or the backstop
        passes (False)."""
        await wakeup.listener.listening(self.settings.require_database_url())
        paused = consumer.assignment()
        consumer.pause(*paused)
        try:
            await asyncio.wait_for(wake.wait(), self.settings.consumer_wake_backstop_ms / 1000)
            return True
        except TimeoutError:
            return False
        finally:
            consumer.resume(*[tp for tp in paused if tp in consumer.assignment()])

    @staticmethod
    async def _commit(consumer, offsets: dict, committed: dict) -> None:
        """Commit what moved since the last commit, for the partitions this member still has."""
        assigned = consumer.assignment()
        changed = {tp: offset for tp, offset in offsets.items() if committed.get(tp) != offset and tp in assigned}
        if not changed:
            return
        try:
            await consumer.commit(changed)
            committed.update(changed)
        except (CommitFailedError, IllegalStateError):
            # The partitions moved to another member in a rebalance; it redelivers from the
            # last committed offset, and handling is idempotent.
            pass

    async def handle_run(self, messages: list[ConsumerRecord]) -> None:
        if len(self.handlers) == 1:
            await self.handlers[0].handle_run(messages)
            return
        # Independent of each other (as separate groups were), so neither waits for the
        # other; each still sees a key's messages in order.
        await asyncio.gather(*(handler.handle_run(messages) for handler in self.handlers))


def decode(message: ConsumerRecord) -> EventEnvelope:
    try:
        return upcast(EventEnvelope.from_json(message.value))
    except (ValueError, TypeError) as exc:
        raise PoisonMessage(f"undecodable message: {exc}") from exc
