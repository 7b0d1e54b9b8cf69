"""Event-sourced aggregates and the repository that runs commands against them.

An aggregate method checks a rule and records new events; applying events is the only
way its state changes (`_on_<EventName>` methods). The repository loads the stream,
runs the command, and appends with the expected version, retrying on a conflict, so
concurrent valid commands on one aggregate all succeed instead of answering 409.

A command does not read its stream at all when this process holds the aggregate as its last
committed command left it: the repository remembers, per process, the state each command
committed and runs the next command on a copy of it. That state is a true prefix of the stream
whoever wrote after it (events are immutable once committed), so trusting it is safe: a decision
taken on a state that is behind is caught where it matters. An append conflicts on the expected
version (then the stream is read and the command run again, as for any concurrent append); a
refusal or a command that records nothing is run again on the stream as stored before it is
answered. A state saved inside a transaction (a saga's step, a consumer, the order view's inline
projection in another service's command) is trusted once that transaction commits: `save`
registers it with `db.on_commit`, which the block owning the transaction runs after its COMMIT
(and drops on a rollback). Commands inside a transaction (`run`) use the trusted state with the
same safety, and `save` forgets what was remembered on any conflict, so the retry of whoever owns
the transaction reads the stream. A stream the caller takes to be new (`execute(new=True)`) is
not read either: the empty state is a prefix of any stream. States of short streams are kept at
most AGGREGATE_CACHE_RECENT (least recently used first out): enough for the seconds between a
checkout's commands, not every checkout ever made.

Loads (reads, and commands without a trusted state) do not replay a long stream from its start
either: states of streams with at least AGGREGATE_CACHE_MIN_EVENTS events are remembered too (at
most AGGREGATE_CACHE_SIZE, apart from the short ones, so a busy shop's churn does not push a long
stream out) and only the events appended since are read. Such a state may come from a transaction
that later rolled back, so each load checks that the event it was remembered at is still the
stream's event at that sequence, and replays the whole stream otherwise.
"""
from __future__ import annotations

import asyncio
import inspect
import os
import random
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Awaitable, Callable, ClassVar, Generic, Iterable, TypeVar

import asyncpg

from shared import db
from shared.copying import state_copy
from shared.envelope import DomainEvent, EventEnvelope, decode_event
from shared.errors import DomainError, not_found  # noqa: F401 (the services import them from here)
from shared.eventstore import Alongside, ConcurrencyConflict, EventStore, Projector, StatementProjection
from shared.lru import BoundedMap


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
CACHE_RECENT = int(os.environ.get("AGGREGATE_CACHE_RECENT", "1000"))


# Streams taken to be new that were not, remembered per repository (a few bytes each).
EXISTING_REMEMBERED = 10_000


class Repository(Generic[A]):
    def __init__(self, store: EventStore, aggregate_cls: type[A], *, cache_size: int = CACHE_SIZE,
                 cache_min_events: int = CACHE_MIN_EVENTS, cache_recent: int = CACHE_RECENT) -> None:
        self.store = store
        self.cls = aggregate_cls
        self.cache_size = cache_size
        self.cache_min_events = cache_min_events
        self.cache_recent = cache_recent
        # aggregate id -> (its state at some version, the id of the event at that version, whether
        # that event is known committed); the state is never handed out itself: commands change
        # what they are given.
        self._states: OrderedDict[str, tuple[A, uuid.UUID, bool]] = OrderedDict()  # long streams
        self._recent: OrderedDict[str, tuple[A, uuid.UUID, bool]] = OrderedDict()  # the others
        # Streams a caller took to be new (`run(new=True)`) that existed: read from then on.
        self._existing: BoundedMap[str, bool] = BoundedMap(EXISTING_REMEMBERED)
        self.events_read = 0  # events decoded and applied by loads: what the cache saves
        self.streams_read = 0  # queries of the stream by loads: what trusting a committed state saves

    async def load(self, conn: asyncpg.Connection | asyncpg.Pool, aggregate_id: str) -> A:
        remembered = self._remembered(aggregate_id)
        committed = isinstance(conn, asyncpg.Pool) or not conn.is_in_transaction()  # what it reads, then
        self.streams_read += 1
        if remembered is not None:
            state, last_event_id, _ = remembered
            # From the remembered state's own last event: proof that the stream still begins as
            # the state says (a state remembered from a transaction that rolled back would not).
            envelopes = await self.store.load_stream(conn, self.cls.aggregate_type, aggregate_id,
                                                     after=state.version - 1)
            if envelopes and envelopes[0].sequence == state.version and envelopes[0].event_id == last_event_id:
                return self._applied(state_copy(state), envelopes[1:], committed)
            self._forget(aggregate_id)
        envelopes = await self.store.load_stream(conn, self.cls.aggregate_type, aggregate_id)
        return self._applied(self.cls(aggregate_id), envelopes, committed)

    def _applied(self, aggregate: A, envelopes: list[EventEnvelope], committed: bool) -> A:
        for envelope in envelopes:
            aggregate._apply(decode_event(envelope))
            aggregate.version += 1
        self.events_read += len(envelopes)
        if envelopes:
            self._remember(aggregate, envelopes[-1].event_id, committed=committed)
        return aggregate

    def _remembered(self, aggregate_id: str) -> tuple[A, uuid.UUID, bool] | None:
        for states in (self._states, self._recent):
            if (remembered := states.get(aggregate_id)) is not None:
                states.move_to_end(aggregate_id)
                return remembered
        return None

    def _forget(self, aggregate_id: str) -> None:
        self._states.pop(aggregate_id, None)
        self._recent.pop(aggregate_id, None)

    def _remember(self, aggregate: A, last_event_id: uuid.UUID, *, committed: bool, confirming: bool = False) -> None:
        """A committed state is remembered whatever its length (it spares a command its read); an
        unconfirmed one only for a long stream, to replace what was remembered before it, or
        when it is `confirming`: known committed once its transaction commits (`_confirm`)."""
        if aggregate.pending:
            return
        long = aggregate.version >= self.cache_min_events
        known = aggregate.id in self._states or aggregate.id in self._recent
        if not (long or committed or known or confirming):
            return
        self._forget(aggregate.id)
        states, bound = (self._states, self.cache_size) if long else (self._recent, self.cache_recent)
        if bound <= 0:
            return
        states[aggregate.id] = (state_copy(aggregate), last_event_id, committed)
        while len(states) > bound:
            states.popitem(last=False)

    def _confirm(self, aggregate_id: str, last_event_id: uuid.UUID) -> None:
        """The transaction that saved the state remembered at `last_event_id` committed: it is
        the state a command may trust, unless something else was remembered since."""
        for states in (self._states, self._recent):
            remembered = states.get(aggregate_id)
            if remembered is not None and remembered[1] == last_event_id:
                states[aggregate_id] = (remembered[0], last_event_id, True)

    def committed_here(self, aggregate_id: str) -> A | None:
        """A copy of the state the last command of this process committed, if it is what is
        remembered: for a read that may show a state behind the stream (another instance may
        have written since) because whatever acts on it is judged again by a command."""
        return self._trusted(aggregate_id)

    def _trusted(self, aggregate_id: str) -> A | None:
        """A copy of the state the last command committed here, if that is what is remembered."""
        remembered = self._remembered(aggregate_id)
        if remembered is None or not remembered[2]:
            return None
        return state_copy(remembered[0])

    async def save(self, conn: asyncpg.Connection, aggregate: A, *, key: str | None = None,
                   project: Projector | None = None, remember: bool = True) -> list[EventEnvelope]:
        """Append the aggregate's new events; `project` updates read models with them in
        the same transaction (see `EventStore.append`). Saved inside a transaction, the state
        is remembered as not yet known committed, and becomes so once the transaction commits
        (`db.on_commit`: its owner says so; `execute` remembers its own); saved outside one
        (the append was its own transaction), it is committed already. A conflict forgets what
        was remembered: whoever retries reads the stream."""
        if not aggregate.pending:
            return []
        try:
            stored = await self.store.append(conn, aggregate_type=self.cls.aggregate_type, aggregate_id=aggregate.id,
                                             expected_version=aggregate.version, events=aggregate.pending, key=key,
                                             project=project)
        except ConcurrencyConflict:
            self._forget(aggregate.id)
            raise
        aggregate.version += len(aggregate.pending)
        aggregate.pending = []
        if stored and remember:
            last = stored[-1].event_id
            if not conn.is_in_transaction():
                self._remember(aggregate, last, committed=True)
            elif db.on_commit(conn, lambda: self._confirm(aggregate.id, last)):
                self._remember(aggregate, last, committed=False, confirming=True)
            else:
                self._remember(aggregate, last, committed=False)
        return stored

    async def run(self, conn: asyncpg.Connection, aggregate_id: str, decide: Callable[[A], Awaitable[None] | None],
                  *, key: str | None = None, project: Projector | None = None,
                  settled: Callable[[A], bool] | None = None, new: bool = False,
                  alongside: Callable[[A], Alongside | None] | None = None) -> list[EventEnvelope]:
        """A command on `conn`, inside the caller's transaction (a saga's step, a consumer, an
        inline projection) or outside any (a step whose one write is this append:
        shared/steps.py `one_statement`): `decide` (it may query, and in a transaction write, on
        `conn`) on the aggregate, then save what it recorded; the events stored (none: it
        recorded nothing).

        It runs on the state this process's last committed command left, when there is one
        (no read), with `execute`'s safety: a state behind the stream conflicts on the append
        (`save` forgets it; the transaction's owner retries, and the retry reads the stream);
        a refusal or nothing recorded on it is decided again on the stream as stored, in the
        same transaction. So `decide` must not write before it refuses or finds nothing to do
        what it cannot write twice; what it writes before recording rolls back on a conflict.
        `settled`: a fact of the state that, once true, stays true however the stream grows (a
        request answered: its answer is stored for good); nothing recorded on a trusted state
        where it holds would be nothing on the stream too, so it is not decided again.
        `new`: the caller has reason to think the stream does not exist yet (as `execute`'s):
        without a trusted state it is decided on an empty one; a stream that exists after all
        conflicts, and the retry of the transaction's owner reads it (this process remembers it).
        `alongside`: the write of the command's own that goes with what was decided (given the
        aggregate after `decide`), in the append's statement (`Alongside`), instead of `project`:
        so a step on a connection outside a transaction stays one statement."""
        assert project is None or alongside is None, "an Alongside is the append's projection"

        def projection(aggregate: A) -> Projector | None:
            return alongside(aggregate) if alongside is not None else project

        trusted = self._trusted(aggregate_id)
        fresh = trusted is None and new and self._existing.get(aggregate_id) is None
        if fresh:
            trusted = self.cls(aggregate_id)
        if trusted is not None:
            try:
                await _decided(decide, trusted)
            except DomainError:
                pass  # judged on the stream as stored before the refusal is answered
            else:
                if trusted.pending or (settled is not None and settled(trusted)):
                    try:
                        return await self.save(conn, trusted, key=key, project=projection(trusted))
                    except ConcurrencyConflict:
                        if fresh:
                            self._existing.put(aggregate_id, True)
                        raise
        aggregate = await self.load(conn, aggregate_id)
        await _decided(decide, aggregate)
        return await self.save(conn, aggregate, key=key, project=projection(aggregate))

    async def _load_run_save(self, conn: asyncpg.Connection, aggregate_id: str, command: Callable[[A], None], *,
                             key: str | None, project: Projector | None = None, then: Projector | None = None,
                             loaded: A | None = None) -> CommandResult[A]:
        aggregate = loaded if loaded is not None else await self.load(conn, aggregate_id)
        command(aggregate)
        stored = await self.save(conn, aggregate, key=key, project=project, remember=False)
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
        new: bool = False,
    ) -> CommandResult[A]:
        """Load, run `command`, append; on a concurrent append reload and run it again.

        `project` updates read models in the same transaction (see `save`); `then` runs in it
        after the append, with the stored events (what they cause, e.g. a saga's first command,
        is appended after them). Without either, or with a StatementProjection and no `then`, no
        transaction is opened: the load needs none (the append's expected version guards it) and
        the append (with that projection's changes) is atomic on its own, which spares a `BEGIN`
        and a `COMMIT`.
        `loaded`: the aggregate as the caller just loaded it (and did not change), to run the
        first attempt on instead of loading it again; a conflict reloads as ever. Without it,
        the first attempt runs on the state this process's last command committed, if any
        (module doc): a conflict, a refusal or nothing recorded on it runs the command again
        on the stream as stored. `new`: the caller has reason to think the stream does not exist
        yet; without a trusted state, the first attempt runs on an empty one (a prefix of any
        stream) with the same safety, so a stream that exists after all costs a conflict.
        """
        trust = loaded is None
        for attempt in range(attempts + trust):  # a trusted state's attempt is one more
            first, loaded = loaded, None
            trusted = self._trusted(aggregate_id) if trust and first is None else None
            if trusted is None and trust and first is None and new:
                trusted = self.cls(aggregate_id)
            trust, start = False, first if first is not None else trusted
            try:
                async with pool.acquire() as conn:
                    if then is None and (project is None or isinstance(project, (StatementProjection, Alongside))):
                        result = await self._load_run_save(conn, aggregate_id, command, key=key, project=project,
                                                           loaded=start)
                    else:
                        async with db.transaction(conn):  # what an inline projection saves, trusted once committed
                            result = await self._load_run_save(conn, aggregate_id, command, key=key, project=project,
                                                               then=then, loaded=start)
            except ConcurrencyConflict:
                if trusted is None:  # a state behind the stream conflicts at once: no one to wait for
                    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
                continue
            except DomainError:
                if trusted is None:
                    raise
                continue  # judged on the stream as stored before the refusal is answered
            if trusted is not None and not result.events:
                continue  # likewise "nothing to do"
            if result.events:
                self._remember(result.aggregate, result.events[-1].event_id, committed=True)
            return result
        raise ConcurrencyConflict(self.cls.aggregate_type, aggregate_id, -1)


async def _decided(decide: Callable[[A], Awaitable[None] | None], aggregate: A) -> None:
    outcome = decide(aggregate)
    if inspect.isawaitable(outcome):
        await outcome
