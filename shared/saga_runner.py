"""The one generic runner of sagas (shared/saga.py): it calls the participants and records
their answers.

Each instance is a row of the host service's `sagas` table (shared/sql/004_sagas.sql, 011),
changed in the transactions that record answers. Driving an instance: call its step's
operation through the participant's interface (in-process, or over HTTP when apart) outside
any transaction, under the cause of that step (`cause_event_id`); then, in a transaction, lock
the row, record the reply's answer event and decide; commit; call the next step; and so on,
to the pivot (run on the host aggregate, as the answer that leads to it is recorded) or the
end of a failed saga. The participant's answer events also reach Kafka through its outbox:
the host's `saga` subscription feeds them to `handle` as well. Both paths record an answer
under the same idempotency record (`processed_events`, the subscription's name, the event
id), so whichever comes first takes it and the other changes nothing. In one process the
drive comes first: from before its calls until their replies are recorded it marks them
`answering` the instance's cause (shared/under_way.py), and the consumer's delivery of an answer
caused by it waits, then passes over what the drive recorded without a transaction; a reply
lost, dropped or refused leaves the answer to the consumer as ever.

The drive knows the row as it last wrote it (its `version`, moved on by every change of the
row, shared/sql/014_saga_versions.sql), and records an answer on it without reading it
(shared/saga_at_version.py): one that needs no host in one statement, `record_saga_answer` (the
idempotency record and the new state, only if the row is still at that version); one that
leads to the pivot with it, in the pivot's transaction, whose host's write reads what it left
(the drive's result: the end, shown without a read). The drive goes on from the state it
wrote. When the row moved on meanwhile (an operator, the sweep, the answer from Kafka) nothing
is stored and the answer is recorded the long way.

A reply lost (a crash, a timeout, an outage) costs a retry, not the saga: the sweep calls a
step again at `retry_at` (the participant answers its first answer again), doubling, until
the step's deadline, after which the saga compensates. A crash anywhere resumes from the last
committed state.
"""
from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import asyncpg

from shared import context, db, metrics, saga_rows
from shared.aggregate import Aggregate, Repository
from shared.copying import state_copy
from shared.envelope import EventEnvelope, decode_event, upcast
from shared.eventstore import ConcurrencyConflict, Projector
from shared.faults import crash_point, dropped, hold_point
from shared.inline import remember_applied
from shared.rpc import ServiceUnavailable
from shared.saga import COMPENSATING, COMPLETED, FAILED, RUNNING, Call, Decision, Saga, SagaInstance, _declared
from shared.saga_at_version import AnswersAtVersion
from shared.settings import Settings
from shared.under_way import answering

log = logging.getLogger(__name__)

class _Lost(Exception):
    """A call whose reply did not come (an outage, a timeout): the sweep calls it again."""


class SagaRunner(AnswersAtVersion):
    """Carries out a `Saga` hosted by an aggregate kept by `repository` (the Order), whose
    `project` updates read models in the same transaction as its events. `consumer` is the
    name of the host's subscription to the answers (its idempotency records are shared)."""

    def __init__(self, saga: Saga, repository: Repository, project: Projector, settings: Settings,
                 consumer: str) -> None:
        self.saga = saga
        self.repository = repository
        self.project = project
        self.settings = settings
        self.consumer = consumer
        self.pool: asyncpg.Pool | None = None
        self.peers: Any = None
        self.await_view: Callable[[str, list[str]], Awaitable[Any]] | None = None
        self._driving: dict[str, asyncio.Task] = {}
        self._replied: dict[str, list[str]] = {}  # answer ids a drive recorded, per saga
        self._again: set[str] = set()
        self._slots: asyncio.Semaphore | None = None

    def bind(self, pool: asyncpg.Pool, peers: Mapping[str, Any], *,
             await_view: Callable[[str, list[str]], Awaitable[Any]] | None = None) -> None:
        """The host's pool and the participants as it calls them (at start-up). `await_view`
        (key, event ids): until the host's read model shows those answers (bounded): the end
        of an instance (the pivot, a failure) waits for it, so that a host showing the end
        also shows what the participants answered, as when the answers came from Kafka."""
        self.pool, self.peers, self.await_view = pool, SimpleNamespace(**peers), await_view
        self._slots = asyncio.Semaphore(self.settings.saga_max_drives)

    def begin(self, host: Aggregate, saga_id: str, data: dict[str, Any]) -> SagaInstance:
        """An instance for `host`, whose start the caller is recording; `started` (in the
        same transaction, after the event that starts it) stores it."""
        return SagaInstance(id=saga_id, saga=self.saga.name, key=host.id,
                            correlation_id=context.current_correlation_id(), data=data)

    def starting(self, instance: SagaInstance, *, cause: str) -> SagaInstance:
        """The instance as it is stored: at its first step, caused by `cause` (the event that
        starts the saga); `instance` stays as it was (its start may be written again). A host
        stores it (saga_rows.row_json, the `start_saga` SQL function) in the statement that appends
        `cause`, or `started` does in that append's transaction; `drive` then makes the first call."""
        begun = state_copy(instance)
        decision = self.saga.begin(begun, self.settings, _now())
        assert decision.local is None and decision.finished is None, "a saga starts with a participant's step"
        begun.started_by = begun.cause_event_id = cause
        return begun

    async def started(self, conn: asyncpg.Connection, instance: SagaInstance, *, cause: str) -> SagaInstance:
        """Store the instance (`starting`) in the caller's transaction, which appends `cause`."""
        begun = self.starting(instance, cause=cause)
        await saga_rows.insert(conn, begun)
        return begun

    # -- driving -------------------------------------------------------------------------
    def drive(self, saga_id: str, *, after_commit: bool = False, known: SagaInstance | None = None) -> asyncio.Task:
        """Drive the instance (a task of the runner's: a caller may stop waiting for it).
        `after_commit`: started from inside a transaction that has the row locked, whose
        outcome the first read waits for. `known`: the instance as its row was just committed
        (by `started`), instead of reading it."""
        running = self._driving.get(saga_id)
        if running is not None and not running.done():
            self._again.add(saga_id)
            return running
        task = asyncio.get_running_loop().create_task(self._drive(saga_id, after_commit, known))
        self._driving[saga_id] = task
        task.add_done_callback(lambda _: self._driving.pop(saga_id, None)
                               if self._driving.get(saga_id) is task else None)
        return task

    def running(self, saga_id: str) -> asyncio.Task | None:
        """The drive of the instance under way in this process, if any."""
        task = self._driving.get(saga_id)
        return task if task is not None and not task.done() else None

    async def _drive(self, saga_id: str, locked_read: bool, known: SagaInstance | None) -> Any:
        """The host's read model as the write that ended the instance left it (read by that
        write's own statement, `reading_the_write`), when this drive recorded the end at the
        version it knew; else None."""
        assert self._slots is not None, "the runner is bound at start-up"
        ended: list = []
        async with self._slots:
            try:
                instance = known if known is not None else await self._read(saga_id, locked=locked_read)
                while instance is not None:
                    calls = self.saga.due_calls(instance)
                    if not calls:
                        return ended[0] if ended and instance.status in (COMPLETED, FAILED) else None
                    # The answers, caused by the instance's `cause_event_id`, also reach this
                    # process's consumer from Kafka, often before the replies are recorded: it
                    # waits for these calls and their records, and passes over what they recorded.
                    with answering(self.consumer, instance.cause_event_id, self.settings.saga_call_timeout_ms / 1000):
                        outcomes = await asyncio.gather(*(self._call(instance, call) for call in calls))
                        moved, probe = False, state_copy(instance)  # to tell which answer ends it
                        # The instance as this drive's records leave it, while each was recorded in
                        # one statement on the row as the drive knew it; None once one was not.
                        current: SagaInstance | None = state_copy(instance)
                        for call, outcome in zip(calls, outcomes, strict=True):
                            recorded, current = await self._record(instance, probe, call, outcome, current, ended)
                            moved = recorded or moved
                    if not moved and saga_id not in self._again:
                        return None
                    self._again.discard(saga_id)
                    instance = current if current is not None else await self._read(saga_id)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("saga drive stopped; the sweep resumes it", extra={"fields": {
                    "saga": saga_id, "error": repr(exc)}})
            finally:
                self._replied.pop(saga_id, None)
                self._again.discard(saga_id)

    async def _call(self, instance: SagaInstance, call: Call) -> Any:
        """The participant's reply, a `_Lost`, or the exception it raised."""
        step = self.saga.step_named(call.step)
        operation = _declared(step.undo if call.undo else step.call, step, "undo" if call.undo else "call")
        with context.caused_by(instance.correlation_id, instance.cause_event_id):
            try:
                reply = await asyncio.wait_for(operation(self.peers)(instance.key, saga_id=instance.id,
                                                                     **call.arguments),
                                               self.settings.saga_call_timeout_ms / 1000)
            except (ServiceUnavailable, asyncio.TimeoutError) as exc:
                return _Lost(repr(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the participant refused or broke: counted, then the step fails
                log.warning("saga call failed", extra={"fields": {"saga": instance.id, "step": call.step,
                                                                  "undo": call.undo, "error": repr(exc)}})
                return exc
        crash_point("saga.after_call")  # the participant committed; its reply is not recorded
        return reply

    async def _record(self, instance: SagaInstance, probe: SagaInstance, call: Call, outcome: Any,
                      current: SagaInstance | None, ended: list) -> tuple[bool, SagaInstance | None]:
        """Record a call's outcome: whether the instance may have moved on, and the instance as
        now stored if this drive knows it (`current`: as it knew it before; None: unknown).
        `probe`: a copy of the instance's state as last read, moved on by the answers since.
        `ended` gets what the host's write read, when a local step ran at the known version."""
        if isinstance(outcome, _Lost):
            return False, current
        if isinstance(outcome, Exception):
            return await self._failed(instance.id, call, f"{type(outcome).__name__}: {outcome}"), None
        events = [upcast(EventEnvelope.model_validate(event)) for event in outcome.get("events", [])]
        if not events:  # called after its undo: nothing to record
            return False, current
        envelope = events[0]
        if dropped(f"saga.answer.{envelope.type}"):  # fault injection: the reply is lost on the way
            return False, current
        await hold_point("saga.answer")
        replied = self._replied.setdefault(instance.id, [])
        replied += [str(e.event_id) for e in events if str(e.event_id) not in replied]
        if self._ends(probe, envelope) and self.await_view is not None:
            await self.await_view(instance.key, replied)
        assert self.pool is not None
        pool = self.pool

        async def record(conn: asyncpg.Connection) -> str:
            recorded = await conn.execute("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)"
                                          " ON CONFLICT DO NOTHING", self.consumer, envelope.event_id)
            if recorded == "INSERT 0 1":
                await self.handle(conn, envelope, drive=False)
            return recorded

        with context.caused_by(envelope.correlation_id, str(envelope.event_id)):
            if current is not None and (moved := await self._record_at_version(current, envelope, ended)) is not None:
                return True, moved if isinstance(moved, SagaInstance) else None
            recorded = await _retried(pool, instance.key, record)
        if recorded == "INSERT 0 1":
            metrics.SAGA_ANSWERS.labels(self.saga.name, "transaction").inc()
        # Recorded, here or before: its delivery from Kafka is passed over without a transaction.
        remember_applied(self.consumer, [str(envelope.event_id)])
        return True, None

    def _ends(self, probe: SagaInstance, envelope: EventEnvelope) -> bool:
        """Whether this answer ends the instance (the pivot, or its failure), judged on (and
        moving on) `probe`."""
        decision = self.saga.answered(probe, decode_event(envelope), self.settings, _now())
        return decision is not None and (decision.local is not None or decision.finished is not None)

    async def _failed(self, saga_id: str, call: Call, error: str) -> bool:
        assert self.pool is not None

        async def fail(conn: asyncpg.Connection) -> bool:
            instance = await saga_rows.lock(conn, "id = $1", saga_id)
            if instance is None:
                return False
            with context.caused_by(instance.correlation_id, instance.cause_event_id):
                decision = self.saga.call_failed(instance, call, error, self.settings, _now())
                if decision is None:
                    return False
                await self._carry_out(conn, instance, decision)
            return instance.status != RUNNING

        return await _retried(self.pool, saga_id, fail)

    async def _read(self, saga_id: str, *, locked: bool = False) -> SagaInstance | None:
        assert self.pool is not None
        if not locked:
            return await saga_rows.read(self.pool, saga_id)
        async with self.pool.acquire() as conn, db.transaction(conn):
            return await saga_rows.lock(conn, "id = $1", saga_id)

    # -- answers, deadlines --------------------------------------------------------------
    async def handle(self, conn: asyncpg.Connection, envelope: EventEnvelope, *, drive: bool = True) -> None:
        """A participant's answer (inside the transaction that records it: the consumer's,
        or the drive's); `drive`: then go on with the next calls once it commits."""
        event = decode_event(envelope)
        instance = await saga_rows.lock(conn, "id = $1", getattr(event, "request_id", None))
        if instance is None or instance.saga != self.saga.name:
            return
        decision = self.saga.answered(instance, event, self.settings, _now())
        if decision is None:
            return
        instance.cause_event_id = str(envelope.event_id)  # the cause of the next calls
        await self._carry_out(conn, instance, decision)
        if drive and decision.calls and self.pool is not None:
            self.drive(instance.id, after_commit=True)

    async def sweep(self, pool: asyncpg.Pool, limit: int = 50) -> int:
        """Run the instances whose deadline has passed (or that an operator aborted), and call
        again the steps whose reply was not recorded by `retry_at`. Safe with several
        sweepers: each instance is taken with `FOR UPDATE SKIP LOCKED`."""
        due = await pool.fetch("SELECT id FROM sagas WHERE status IN ('running', 'compensating')"
                               " AND (deadline_at <= now() OR retry_at <= now()) AND NOT (id = ANY($2::text[]))"
                               " ORDER BY least(deadline_at, retry_at) LIMIT $1", limit, list(self._driving))
        handled = 0
        for row in due:
            try:
                instance = await self._sweep_one(pool, row["id"])
            except ConcurrencyConflict:  # its host changed meanwhile: the next sweep takes it again
                continue
            if instance is None:
                continue
            handled += 1
            if instance.status in (RUNNING, COMPENSATING) and self.pool is not None:
                self.drive(instance.id)
        return handled

    async def _sweep_one(self, pool: asyncpg.Pool, saga_id: str) -> SagaInstance | None:
        """The instance, expired or called again, if it was still due and not another sweeper's."""
        async with pool.acquire() as conn, db.transaction(conn):
            instance = await saga_rows.lock(conn, "id = $1 AND (deadline_at <= now() OR retry_at <= now())",
                                        saga_id, skip_locked=True)
            if instance is None:
                return None
            now = _now()
            if instance.deadline_at is not None and instance.deadline_at <= now or instance.abort_requested \
                    or instance.force_requested:
                decision = self.saga.expired(instance, self.settings, now)
                if decision is None:
                    return None
                log.warning("saga step expired", extra={"fields": {
                    "saga": instance.id, "order": instance.key, "step": self.saga.steps[instance.step].name,
                    "status": instance.status, "aborted": instance.abort_requested,
                    "forced": instance.force_requested}})
                with context.caused_by(instance.correlation_id, instance.started_by):
                    await self._carry_out(conn, instance, decision)
            else:
                self.saga.retried(instance, self.settings, now)
                await saga_rows.update(conn, instance)
        return instance

    async def _carry_out(self, conn: asyncpg.Connection, instance: SagaInstance, decision: Decision) -> None:
        if decision.local is not None or decision.finished == FAILED:
            await self._on_host(conn, instance, decision)
        else:
            crash_point("saga.before_commit")
        await saga_rows.update(conn, instance)

    async def _on_host(self, conn: asyncpg.Connection, instance: SagaInstance, decision: Decision) -> SagaInstance:
        """The local steps (or the failure's end) on the host, in the caller's transaction:
        `instance` as they leave it."""
        # On the host as this process last committed it, if it has it (Repository.run: no
        # read); decided again from the same instance if that host records nothing.
        before, first = state_copy(instance), decision

        async def decide(host: Aggregate) -> None:
            nonlocal decision
            instance.__dict__.update(state_copy(before).__dict__)
            decision = first
            while decision.local is not None:
                await _declared(decision.local.run, decision.local, "run")(conn, host, instance, self.settings)
                decision = self.saga.after_local(instance, self.settings, _now())
            if decision.finished == FAILED:
                self.saga.on_failed(host, instance)
            crash_point("saga.before_commit")  # the step is decided, not yet committed

        await self.repository.run(conn, instance.key, decide, project=self.project)
        return instance


def _now() -> datetime:
    return datetime.now(timezone.utc)


T = TypeVar("T")
ATTEMPTS = 50


async def _retried(pool: asyncpg.Pool, key: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """`work` in a transaction, run again on a concurrent append to the host (a host state that
    was behind is forgotten by then: the next attempt reads the stream)."""
    for attempt in range(ATTEMPTS):
        try:
            async with pool.acquire() as conn, db.transaction(conn):
                return await work(conn)
        except ConcurrencyConflict:
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
    raise ConcurrencyConflict("saga host", key, -1)
