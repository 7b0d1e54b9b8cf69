"""Kafka consumer groups with PostgreSQL's exactly-once effects.

Offsets are committed only after processing. A consumer group may carry several handlers (a
service's subscriptions to the same topics, shared/handler.py): each message is fetched once
and handed to all of them at once, every handler with its own records, retries and dead
letters. One key's messages are handled in order, several keys at once (shared/inflight.py);
a key whose next message a call of this process is answering right now waits for that call
first (shared/under_way.py). Idle, a consumer stops fetching until a relay announces it published to its topics.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Iterable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import CommitFailedError, IllegalStateError

from shared import metrics, shutdown, under_way, wakeup
from shared.envelope import DomainEvent
from shared.eventstore import EventStore
from shared.handler import Handler, IdempotentHandler, StatementForm
from shared.inflight import InFlight
from shared.kafka import make_consumer
from shared.settings import Settings
from shared.under_way import Call

log = logging.getLogger(__name__)


class EventConsumer:
    """One Kafka consumer group: fetches `topics` and hands every message, in order per
    key, to all of its handlers at once (a service's subscriptions that read the same
    topics share one group: one fetch for all of them; each keeps its own idempotency
    records, retries and dead letters under its own name). Given a single `handler` (and its
    one-statement form, `statement`), the group is that handler's, named `group_id`."""

    def __init__(self, *, settings: Settings, pool: asyncpg.Pool, producer: AIOKafkaProducer,
                 group_id: str, topics: list[str], handler: Handler | None = None,
                 event_types: Iterable[type[DomainEvent]] | None = None, background: bool = False,
                 notices: EventStore | None = None, wake_on_publish: bool = False,
                 handlers: list[IdempotentHandler] | None = None, statement: StatementForm | None = None) -> None:
        self.settings = settings
        # Idle, wait for the relays' notification instead of polling (shared/wakeup.py).
        self.wake_on_publish = wake_on_publish
        self.group_id = group_id
        self.topics = topics
        if handlers is None:
            if handler is None:
                raise TypeError(f"consumer group {group_id} needs a handler or its handlers")
            handlers = [IdempotentHandler(settings=settings, pool=pool, producer=producer, name=group_id,
                                          handler=handler, event_types=event_types, notices=notices,
                                          statement=statement)]
        self.handlers = handlers
        self.background = background
        # Seconds to wait after each batch before fetching again (`pace`): 0, fetch at once.
        self.pace_s = 0.0
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
        in_flight = self._in_flight = InFlight(self.handle_run, asyncio.Semaphore(self.settings.consumer_concurrency),
                                               answering=self.answering)
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
                    if self.pace_s and not self.draining:  # draining, the broker's topics wait on it
                        await asyncio.sleep(self.pace_s)
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
            # Bounded (shared/shutdown.py): a commit without a coordinator is retried for ever;
            # what is not committed is redelivered and handled idempotently.
            timeout_s = self.settings.shutdown_timeout_s
            await shutdown.bounded(f"{self.group_id}.in-flight", in_flight.stop(), timeout_s)
            await shutdown.bounded(f"{self.group_id}.commit",
                                   self._commit(consumer, in_flight.committable(), committed), timeout_s)
            await shutdown.bounded(f"{self.group_id}.stop", consumer.stop(), timeout_s)

    def pace(self, ms: int) -> None:
        """Wait `ms` after each batch before the next fetch: where calls and inline projections
        apply its events as they are stored (every service in one process, tillstream/host.py),
        this consumer is only the backstop for a lost reply or a crash, and fetching what has
        gathered at a pace costs the broker and this process a fraction of fetching each few
        messages as they come. An idle consumer still waits for a relay's notice as before."""
        self.pace_s = max(ms, 0) / 1000

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
        """While draining it never idles nor keeps its pace (shared/recycle.py): it fetches what
        is left at once rather than after a relay's wake-up (`drained()` commits it)."""
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

    def answering(self, message: ConsumerRecord) -> list[Call]:
        """The calls of this process under way that answer `message` for its handlers, when
        waiting for them is all its handlers would do now: every handler that acts on it has
        applied it here already or has such a call. A handler with work of its own on it (the
        view's, apart) goes on at once, and then the others handle it as ever: no handler's
        work waits for another's call, which may itself wait for that work (the saga's end
        waits for the view)."""
        if under_way.none():
            return []
        answering: list[Call] = []
        for handler in self.handlers:
            if not handler.wants(message) or handler.applied(message):
                continue
            calls = handler.calls_answering(message)
            if not calls:
                return []
            answering += calls
        return answering

    async def handle_run(self, messages: list[ConsumerRecord]) -> None:
        if len(self.handlers) == 1:
            await self.handlers[0].handle_run(messages)
            return
        # Independent of each other (as separate groups were), so neither waits for the
        # other; each still sees a key's messages in order.
        await asyncio.gather(*(handler.handle_run(messages) for handler in self.handlers))
