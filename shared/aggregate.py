"""Event-sourced aggregates and the repository that runs commands against them.

An aggregate method checks a rule and records new events; applying events is the only
way its state changes (`_on_<EventName>` methods). The repository loads the stream,
runs the command, and appends with the expected version, retrying on a conflict, so
concurrent valid commands on one aggregate all succeed instead of answering 409.
"""
from __future__ import annotations

import asyncio
import random
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


class Repository(Generic[A]):
    def __init__(self, store: EventStore, aggregate_cls: type[A]) -> None:
        self.store = store
        self.cls = aggregate_cls

    async def load(self, conn: asyncpg.Connection | asyncpg.Pool, aggregate_id: str) -> A:
        envelopes = await self.store.load_stream(conn, self.cls.aggregate_type, aggregate_id)
        return self.cls.rehydrate(aggregate_id, (decode_event(e) for e in envelopes))

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
        return stored

    async def _load_run_save(self, conn: asyncpg.Connection, aggregate_id: str, command: Callable[[A], None], *,
                             key: str | None, project: Projector | None = None,
                             loaded: A | None = None) -> CommandResult[A]:
        aggregate = loaded if loaded is not None else await self.load(conn, aggregate_id)
        command(aggregate)
        return CommandResult(aggregate, await self.save(conn, aggregate, key=key, project=project))

    async def execute(
        self,
        pool: asyncpg.Pool,
        aggregate_id: str,
        command: Callable[[A], None],
        *,
        key: str | None = None,
        project: Projector | None = None,
        attempts: int = 50,
        loaded: A | None = None,
    ) -> CommandResult[A]:
        """Load, run `command`, append; on a concurrent append reload and run it again.

        `project` updates read models in the same transaction (see `save`). Without it no
        transaction is opened: the load needs none (the append's expected version guards
        it) and the append is atomic on its own, which spares a `BEGIN` and a `COMMIT`.
        `loaded`: the aggregate as the caller just loaded it (and did not change), to run the
        first attempt on instead of loading it again; a conflict reloads as ever.
        """
        for attempt in range(attempts):
            first, loaded = loaded, None
            try:
                async with pool.acquire() as conn:
                    if project is None:
                        return await self._load_run_save(conn, aggregate_id, command, key=key, loaded=first)
                    async with conn.transaction():
                        return await self._load_run_save(conn, aggregate_id, command, key=key, project=project,
                                                         loaded=first)
            except ConcurrencyConflict:
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise ConcurrencyConflict(self.cls.aggregate_type, aggregate_id, -1)
