"""Event-sourced aggregates and the repository that runs commands against them.

An aggregate method checks a rule and records new events; applying events is the only
way its state changes (`_on_<EventName>` methods). The repository loads the stream,
runs the command, and appends with the expected version, retrying on a conflict, so
concurrent valid commands on one aggregate all succeed instead of answering 409.

A command does not replay a long stream from its start: the repository keeps, per process,
the state of recently loaded aggregates whose streams have at least AGGREGATE_CACHE_MIN_EVENTS
events (at most AGGREGATE_CACHE_SIZE of them) and reads only the events appended since. A
stream is append-only, so a remembered state is a true prefix whoever wrote after it (another
instance, another process): the cache can be behind, never wrong. Each load checks that the
event the state was remembered at is still the stream's event at that sequence (it would not be
after the transaction that appended it rolled back), and replays the whole stream otherwise.
"""
from __future__ import annotations

import asyncio
import copy
import os
import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Generic, Iterable, TypeVar

import asyncpg

from shared.envelope import DomainEvent, EventEnvelope, decode_event
from shared.errors import DomainError, not_found  # noqa: F401 (the services import them from here)
from shared.eventstore import ConcurrencyConflict, EventStore, Projector


class Aggregate:
    aggregate_type: ClassVar[str]

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self.pending: list[DomainEvent] = []

    @classmethod
    def rehydrate(cls, aggregate_id: str, events: Iterable[DomainEvent]):
        aggregate = cls(aggregate_id)
        for event in events:
            aggregate._apply(event)
            aggregate.version += 1
        return aggregate

    def _record(self, event: DomainEvent) -> None:
        self._apply(event)
        self.pending.append(event)

    def _apply(self, event: DomainEvent) -> None:
        getattr(self, f"_on_{type(event).__name__}")(event)

    @property
    def exists(self) -> bool:
        return self.version > 0 or bool(self.pending)


A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")


@dataclass
class CommandResult(Generic[A]):
    aggregate: A
    events: list[EventEnvelope] = field(default_factory=list)

    @property
    def event_ids(self) -> list[str]:
        """What a command reports, so a caller can wait for views to apply its events."""
        return [str(e.event_id) for e in self.events]


CACHE_SIZE = int(os.environ.get("AGGREGATE_CACHE_SIZE", "10000"))
CACHE_MIN_EVENTS = int(os.environ.get("AGGREGATE_CACHE_MIN_EVENTS", "16"))


class Repository(Generic[A]):
    def __init__(self, store: EventStore, aggregate_cls: type[A], *, cache_size: int = CACHE_SIZE,
                 cache_min_events: int = CACHE_MIN_EVENTS) -> None:
        self.store = store
        self.cls = aggregate_cls
        self.cache_size = cache_size
        self.cache_min_events = cache_min_events
        # aggregate id -> (its state at some version, the id of the event at that version); the
        # state is never handed out itself: commands change what they are given.
        self._states: OrderedDict[str, tuple[A, uuid.UUID]] = OrderedDict()
        self.events_read = 0  # events decoded and applied by loads: what the cache saves

    async def load(self, conn: asyncpg.Connection | asyncpg.Pool, aggregate_id: str) -> A:
        remembered = self._states.get(aggregate_id)
        if remembered is not None:
            state, last_event_id = remembered
            # From the remembered state's own last event: proof that the stream still begins as
            # the state says (a state remembered from a transaction that rolled back would not).
            envelopes = await self.store.load_stream(conn, self.cls.aggregate_type, aggregate_id,
                                                     after=state.version - 1)
            if envelopes and envelopes[0].sequence == state.version and envelopes[0].event_id == last_event_id:
                self._states.move_to_end(aggregate_id)
                return self._applied(copy.deepcopy(state), envelopes[1:], last_event_id)
            del self._states[aggregate_id]
        envelopes = await self.store.load_stream(conn, self.cls.aggregate_type, aggregate_id)
        return self._applied(self.cls(aggregate_id), envelopes, None)

    def _applied(self, aggregate: A, envelopes: list[EventEnvelope], last_event_id: uuid.UUID | None) -> A:
        for envelope in envelopes:
            aggregate._apply(decode_event(envelope))
            aggregate.version += 1
        self.events_read += len(envelopes)
        if envelopes:
            self._remember(aggregate, envelopes[-1].event_id)
        return aggregate

    def _remember(self, aggregate: A, last_event_id: uuid.UUID) -> None:
        if aggregate.pending or aggregate.version < self.cache_min_events or self.cache_size <= 0:
            return
        self._states[aggregate.id] = (copy.deepcopy(aggregate), last_event_id)
        self._states.move_to_end(aggregate.id)
        while len(self._states) > self.cache_size:
            self._states.popitem(last=False)

    async def save(self, conn: asyncpg.Connection, aggregate: A, *, key: str | None = None,
                   project: Projector | None = None) -> list[EventEnvelope]:
        """Append the aggregate's new events; `project` updates read models with them in
        the same transaction (see `EventStore.append`)."""
        if not aggregate.pending:
            return []
        stored = await self.store.append(conn, aggregate_type=self.cls.aggregate_type, aggregate_id=aggregate.id,
                                         expected_version=aggregate.version, events=aggregate.pending, key=key,
                                         project=project)
        aggregate.version += len(aggregate.pending)
        aggregate.pending = []
        if stored:
            self._remember(aggregate, stored[-1].event_id)
        return stored

    async def _load_run_save(self, conn: asyncpg.Connection, aggregate_id: str, command: Callable[[A], None], *,
                             key: str | None, project: Projector | None = None, then: Projector | None = None,
                             loaded: A | None = None) -> CommandResult[A]:
        aggregate = loaded if loaded is not None else await self.load(conn, aggregate_id)
        command(aggregate)
        stored = await self.save(conn, aggregate, key=key, project=project)
        if then is not None:
            await then(conn, stored)
        return CommandResult(aggregate, stored)

    async def execute(
        self,
        pool: asyncpg.Pool,
        aggregate_id: str,
        command: Callable[[A], None],
        *,
        key: str | None = None,
        project: Projector | None = None,
        then: Projector | None = None,
        attempts: int = 50,
        loaded: A | None = None,
    ) -> CommandResult[A]:
        """Load, run `command`, append; on a concurrent append reload and run it again.

        `project` updates read models in the same transaction (see `save`); `then` runs in it
        after the append, with the stored events (what they cause, e.g. a saga's first command,
        is appended after them). Without either no transaction is opened: the load needs none
        (the append's expected version guards it) and the append is atomic on its own, which
        spares a `BEGIN` and a `COMMIT`.
        `loaded`: the aggregate as the caller just loaded it (and did not change), to run the
        first attempt on instead of loading it again; a conflict reloads as ever.
        """
        for attempt in range(attempts):
            first, loaded = loaded, None
            try:
                async with pool.acquire() as conn:
                    if project is None and then is None:
                        return await self._load_run_save(conn, aggregate_id, command, key=key, loaded=first)
                    async with conn.transaction():
                        return await self._load_run_save(conn, aggregate_id, command, key=key, project=project,
                                                         then=then, loaded=first)
            except ConcurrencyConflict:
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise ConcurrencyConflict(self.cls.aggregate_type, aggregate_id, -1)
