"""Sagas as definitions, and the one generic runner that carries them out.

A saga is a tuple of `Step`s read top to bottom, like Eventuate Tram's
`step().invokeParticipant(...).onReply(...).withCompensation(...)`: each step names its
participant, the command that invokes it, what each answer means, the command that undoes
it, and its deadline. The last step is the pivot, run locally on the host aggregate.

The runner keeps each instance in the host service's `sagas` table (shared/sql/004_sagas.sql),
changed in the same transaction as the commands it sends: commands are the events of the
instance's own stream in the host service's store, so they reach Kafka through its outbox,
on a topic of their own (`order.saga`), never among the host aggregate's events.
A crash anywhere resumes from the last committed step; an answer that does not fit the
instance's state (a duplicate, or one that arrives after its deadline) changes nothing.

When a step fails (a failing answer, a missed deadline, a dead-lettered command, or an
operator's abort), every step invoked so far is compensated, the failing one included, as
its participant may have acted before the failure was known. The compensations are
independent of each other, so they are sent together; the saga ends once each is answered
(a compensation not answered in time is sent again: participants answer duplicates once),
or when an operator forces it to (`force_requested`): it then fails at once, its failure
naming the compensations left unanswered, for someone to see to by hand.

Everything that decides (`Saga.begin`, `answered`, `expired`, `dead_lettered`) is pure and
tested without a database or broker (tests/unit/test_completion_saga.py).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import asyncpg

from shared import context
from shared.aggregate import Aggregate, Repository
from shared.contracts.dead_letters import DeadLetterNotice, notice_type
from shared.envelope import DomainEvent, EventEnvelope, decode_event
from shared.eventstore import EventStore, Projector
from shared.faults import crash_point
from shared.settings import Settings

log = logging.getLogger(__name__)

RUNNING, COMPENSATING, COMPLETED, FAILED = "running", "compensating", "completed", "failed"


@dataclass(frozen=True)
class Failure:
    """Why a saga failed: a stable `code`, a `message` for people, and the state the host
    goes back to once every compensation is done."""
    code: str
    message: str
    state: str
    unanswered: tuple[str, ...] = ()  # compensations an operator stopped waiting for (a forced end)


@dataclass
class SagaInstance:
    id: str                 # the request id every command and answer carries
    saga: str
    key: str                # the host aggregate's id (the order number)
    correlation_id: str
    data: dict[str, Any]    # what the steps learnt so far (JSON values)
    step: int = 0
    status: str = RUNNING
    invoked: list[str] = field(default_factory=list)   # steps whose command was sent
    pending: list[str] = field(default_factory=list)   # compensations not yet answered
    failure: Failure | None = None
    command_event_id: str | None = None  # the current step's command, to match a dead-letter notice
    deadline_at: datetime | None = None
    attempts: int = 0       # compensations sent again after their deadline
    abort_requested: bool = False
    stream_version: int = 0  # commands sent: the events of the instance's own stream
    force_requested: bool = False  # an operator's order to stop waiting for the compensations
    started_by: str | None = None  # the event that started it (CompletionRequested): the cause of what a
    #                                deadline or an operator's abort makes it send


# An answer moves the saga on with new data (a dict) or fails it (a Failure).
Answer = Callable[[SagaInstance, Any], "dict[str, Any] | Failure"]


def no_arguments(instance: SagaInstance) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Step:
    """One step. A participant's step sends `command(number=<key>, request_id=<saga id>,
    **arguments(instance))` and waits for one of the events in `answers`; a failed saga
    sends `compensation(number=..., request_id=...)` and waits for `compensated_by`.
    A local step (`run`) acts on the host aggregate itself: the pivot."""
    name: str
    participant: str
    command: type[DomainEvent] | None = None
    arguments: Callable[[SagaInstance], dict[str, Any]] = no_arguments
    answers: Mapping[type[DomainEvent], Answer] = field(default_factory=dict)
    compensation: type[DomainEvent] | None = None
    compensated_by: type[DomainEvent] | None = None
    deadline: str | None = None          # the Settings field holding it, in milliseconds
    on_timeout: Failure | None = None    # also what a dead-lettered command means
    when: Callable[[SagaInstance], bool] = lambda instance: True
    run: Callable[[asyncpg.Connection, Aggregate, SagaInstance], Awaitable[None]] | None = None

    @property
    def local(self) -> bool:
        return self.run is not None

    def invoke(self, instance: SagaInstance) -> DomainEvent:
        return _declared(self.command, self, "command").model_validate(
            {"number": instance.key, "request_id": instance.id, **self.arguments(instance)})

    def compensate(self, instance: SagaInstance) -> DomainEvent:
        return _declared(self.compensation, self, "compensation").model_validate(
            {"number": instance.key, "request_id": instance.id})


T = TypeVar("T")


def _declared(part: T | None, step: Step, name: str) -> T:
    """A part of `step` its kind must have (a participant's command, a local step's `run`)."""
    if part is None:
        raise ValueError(f"saga step {step.name!r} has no {name}")
    return part


@dataclass
class Decision:
    """What the runner does next: record `commands` on the host, run a local step, or end."""
    commands: list[DomainEvent] = field(default_factory=list)
    local: Step | None = None
    finished: str | None = None  # COMPLETED or FAILED


@dataclass(frozen=True)
class Saga:
    name: str
    steps: tuple[Step, ...]
    # The end of a failed saga on the host aggregate (e.g. the order back in `payment`).
    on_failed: Callable[[Aggregate, SagaInstance], None]
    compensation_retry: str = "saga_compensation_retry_ms"  # a Settings field, in milliseconds

    def step_named(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step.participant for step in self.steps if not step.local))

    def listens_to(self) -> tuple[type[DomainEvent], ...]:
        """Every event that can move an instance on: the answers, the compensations' answers
        and the participants' dead-letter notices (on the participants' topics)."""
        notices = [notice_type(participant) for participant in self.participants]
        answers = [answer for step in self.steps for answer in step.answers]
        return tuple(dict.fromkeys([*answers, *(s.compensated_by for s in self.steps if s.compensated_by),
                                    *notices]))

    # -- decisions (pure) -------------------------------------------------------------
    def begin(self, instance: SagaInstance, settings: Settings, now: datetime) -> Decision:
        return self._enter(instance, 0, settings, now)

    def answered(self, instance: SagaInstance, event: DomainEvent, settings: Settings,
                 now: datetime) -> Decision | None:
        """An answer from a participant; None when it does not fit the instance's state."""
        if instance.status == RUNNING:
            step = self.steps[instance.step]
            answer = step.answers.get(type(event))
            if answer is None:
                return None
            outcome = answer(instance, event)
            if isinstance(outcome, Failure):
                return self._fail(instance, outcome, settings, now)
            instance.data.update(outcome)
            return self._enter(instance, instance.step + 1, settings, now)
        if instance.status == COMPENSATING:
            undone = [name for name in instance.pending if self.step_named(name).compensated_by is type(event)]
            if not undone:
                return None
            instance.pending.remove(undone[0])
            if instance.pending:
                return Decision()
            instance.status, instance.deadline_at = FAILED, None
            return Decision(finished=FAILED)
        return None

    def after_local(self, instance: SagaInstance, settings: Settings, now: datetime) -> Decision:
        return self._enter(instance, instance.step + 1, settings, now)

    def expired(self, instance: SagaInstance, settings: Settings, now: datetime) -> Decision | None:
        """The deadline passed (or an operator asked to abort)."""
        if instance.status == RUNNING:
            step = self.steps[instance.step]
            failure = step.on_timeout or Failure("step_timed_out", f"The {step.name} step did not answer in time.",
                                                 "confirm")
            if instance.abort_requested:
                failure = Failure("aborted", "The completion was aborted by an operator.", failure.state)
            return self._fail(instance, failure, settings, now)
        if instance.status == COMPENSATING and instance.force_requested:
            # A compensating saga always has the failure that started its compensations.
            assert instance.failure is not None
            instance.failure = replace(instance.failure, unanswered=tuple(instance.pending))
            instance.status, instance.pending, instance.deadline_at = FAILED, [], None
            return Decision(finished=FAILED)
        if instance.status == COMPENSATING:
            # A compensation not answered in time is sent again; participants answer once.
            instance.attempts += 1
            instance.deadline_at = now + min(_setting(settings, self.compensation_retry) * 2 ** instance.attempts,
                                             timedelta(minutes=5))
            return Decision(commands=[self.step_named(name).compensate(instance) for name in instance.pending])
        return None

    def dead_lettered(self, instance: SagaInstance, notice: DeadLetterNotice, settings: Settings,
                      now: datetime) -> Decision | None:
        """A participant gave up on the current step's command: nothing will answer it."""
        if instance.status != RUNNING or notice.original_event_id != instance.command_event_id:
            return None
        step = self.steps[instance.step]
        timeout = step.on_timeout or Failure("step_failed", "", "confirm")
        return self._fail(instance, Failure("step_dead_lettered", f"The {step.name} step failed: {notice.error}"[:500],
                                            timeout.state), settings, now)

    def _enter(self, instance: SagaInstance, index: int, settings: Settings, now: datetime) -> Decision:
        while index < len(self.steps) and not self.steps[index].when(instance):
            index += 1
        if index == len(self.steps):
            instance.status, instance.deadline_at = COMPLETED, None
            return Decision(finished=COMPLETED)
        step = self.steps[index]
        instance.step = index
        if step.local:
            instance.deadline_at = None
            return Decision(local=step)
        instance.invoked.append(step.name)
        instance.deadline_at = now + _setting(settings, step.deadline) if step.deadline else None
        return Decision(commands=[step.invoke(instance)])

    def _fail(self, instance: SagaInstance, failure: Failure, settings: Settings, now: datetime) -> Decision:
        instance.failure = failure
        instance.pending = [name for name in reversed(instance.invoked) if self.step_named(name).compensation]
        if not instance.pending:
            instance.status, instance.deadline_at = FAILED, None
            return Decision(finished=FAILED)
        instance.status = COMPENSATING
        instance.deadline_at = now + _setting(settings, self.compensation_retry)
        return Decision(commands=[self.step_named(name).compensate(instance) for name in instance.pending])

    # -- documentation ----------------------------------------------------------------
    def mermaid(self, host: str = "order") -> str:
        """The saga as a Mermaid sequence diagram (the README's is this, checked by a test)."""
        lines = ["sequenceDiagram", f"    participant {host}"]
        lines += [f"    participant {p}" for p in dict.fromkeys(s.participant for s in self.steps) if p != host]
        for step in self.steps:
            if step.local:
                lines.append(f"    Note over {host}: {step.name}: the pivot, local (it cannot fail)")
                continue
            condition = f" [{step.when.__doc__.strip()}]" if step.when.__doc__ else ""
            command, deadline = _declared(step.command, step, "command"), _declared(step.deadline, step, "deadline")
            lines.append(f"    {host}->>{step.participant}: {step.name}{condition}: {command.event_type}"
                         f" (deadline {deadline.upper()})")
            lines += [f"    {step.participant}-->>{host}: {answer.event_type}" for answer in step.answers]
            if step.compensation:
                undone_by = _declared(step.compensated_by, step, "compensated_by")
                lines.append(f"    Note over {host},{step.participant}: undo: {step.compensation.event_type}"
                             f" → {undone_by.event_type}")
        return "\n".join(lines)


# -- the runner (I/O) --------------------------------------------------------------------
_COLUMNS = ("id, saga, key, correlation_id, data, step, status, invoked, pending, failure, command_event_id,"
            " deadline_at, attempts, abort_requested, stream_version, force_requested, started_by")


def _row_to_instance(row: asyncpg.Record) -> SagaInstance:
    failure = row["failure"]
    return SagaInstance(id=row["id"], saga=row["saga"], key=row["key"], correlation_id=row["correlation_id"],
                        data=row["data"], step=row["step"], status=row["status"], invoked=list(row["invoked"]),
                        pending=list(row["pending"]), failure=Failure(**failure) if failure else None,
                        command_event_id=row["command_event_id"], deadline_at=row["deadline_at"],
                        attempts=row["attempts"], abort_requested=row["abort_requested"],
                        stream_version=row["stream_version"], force_requested=row["force_requested"],
                        started_by=row["started_by"])


class SagaRunner:
    """Carries out a `Saga` hosted by an aggregate kept by `repository` (the Order), whose
    `project` updates read models in the same transaction as its events.

    The commands an instance sends are the events of its own stream (`<Name>Saga`, one per
    instance), appended to `store` (the host service's) and published on `topic`, keyed by
    the host's id (the order number: one partition per order), so a step that only sends a
    command need not load the host at all; the host is loaded for a local step and for the
    end of a failed saga.
    """

    def __init__(self, saga: Saga, repository: Repository, project: Projector, settings: Settings,
                 store: EventStore, topic: str) -> None:
        self.saga = saga
        self.repository = repository
        self.project = project
        self.settings = settings
        self.store = store
        self.topic = topic
        self.stream_type = f"{saga.name.title()}Saga"

    def begin(self, host: Aggregate, saga_id: str, data: dict[str, Any]) -> SagaInstance:
        """An instance for `host`, whose start the caller is recording; `started` (in the
        same transaction, after the event that starts it) sends its first command and stores it."""
        return SagaInstance(id=saga_id, saga=self.saga.name, key=host.id,
                            correlation_id=context.current_correlation_id(), data=data)

    async def started(self, conn: asyncpg.Connection, instance: SagaInstance, *, cause: str) -> None:
        """Send the first command, caused by `cause` (the event that starts the saga, already
        appended in this transaction), and store the instance."""
        decision = self.saga.begin(instance, self.settings, _now())
        assert decision.local is None and decision.finished is None, "a saga starts with a participant's step"
        instance.started_by = cause
        with context.caused_by(instance.correlation_id, cause):
            await self._send(conn, instance, decision.commands)
        await conn.execute(f"INSERT INTO sagas ({_COLUMNS}, started_at, updated_at)"
                           f" VALUES ({', '.join(f'${i + 1}' for i in range(len(_values(instance))))}, now(), now())",
                           *_values(instance))

    async def handle(self, conn: asyncpg.Connection, envelope: EventEnvelope) -> None:
        """A participant's answer, or a dead-letter notice (inside the consumer's transaction)."""
        event = decode_event(envelope)
        now = _now()
        if isinstance(event, DeadLetterNotice):
            instance = await self._lock(conn, "command_event_id = $1", event.original_event_id)
            decide = lambda i: self.saga.dead_lettered(i, event, self.settings, now)  # noqa: E731
        else:
            instance = await self._lock(conn, "id = $1", getattr(event, "request_id", None))
            decide = lambda i: self.saga.answered(i, event, self.settings, now)  # noqa: E731
        if instance is None or instance.saga != self.saga.name:
            return
        decision = decide(instance)
        if decision is not None:
            await self._carry_out(conn, instance, decision)

    async def sweep(self, pool: asyncpg.Pool, limit: int = 50) -> int:
        """Run the instances whose deadline has passed (or that an operator aborted). Safe
        with several sweepers: each instance is taken with `FOR UPDATE SKIP LOCKED`."""
        due = await pool.fetch("SELECT id FROM sagas WHERE status IN ('running', 'compensating')"
                               " AND deadline_at <= now() ORDER BY deadline_at LIMIT $1", limit)
        handled = 0
        for row in due:
            async with pool.acquire() as conn, conn.transaction():
                instance = await self._lock(conn, "id = $1 AND deadline_at <= now()", row["id"], skip_locked=True)
                if instance is None:
                    continue
                # What a deadline or an abort makes it send is caused by the completion's request.
                with context.caused_by(instance.correlation_id, instance.started_by):
                    decision = self.saga.expired(instance, self.settings, _now())
                    if decision is not None:
                        log.warning("saga step expired", extra={"fields": {
                            "saga": instance.id, "order": instance.key, "step": self.saga.steps[instance.step].name,
                            "status": instance.status, "aborted": instance.abort_requested,
                            "forced": instance.force_requested}})
                        await self._carry_out(conn, instance, decision)
                        handled += 1
        return handled

    async def _carry_out(self, conn: asyncpg.Connection, instance: SagaInstance, decision: Decision) -> None:
        host = None
        if decision.local is not None or decision.finished == FAILED:
            host = await self.repository.load(conn, instance.key)
            while decision.local is not None:
                await _declared(decision.local.run, decision.local, "run")(conn, host, instance)
                decision = self.saga.after_local(instance, self.settings, _now())
            if decision.finished == FAILED:
                self.saga.on_failed(host, instance)
        crash_point("saga.before_commit")  # the step is decided, not yet committed
        await self._send(conn, instance, decision.commands)
        if host is not None:
            await self.repository.save(conn, host, project=self.project)
        await conn.execute(
            "UPDATE sagas SET data = $2, step = $3, status = $4, invoked = $5, pending = $6, failure = $7,"
            " command_event_id = $8, deadline_at = $9, attempts = $10, stream_version = $11, updated_at = now(),"
            " ended_at = CASE WHEN $4 IN ('completed', 'failed') THEN now() END WHERE id = $1",
            instance.id, *_values(instance)[4:13], instance.stream_version)

    async def _send(self, conn: asyncpg.Connection, instance: SagaInstance, commands: list[DomainEvent]) -> None:
        """Append commands to the instance's stream, to be published through the outbox."""
        if not commands:
            return
        stored = await self.store.append(conn, aggregate_type=self.stream_type, aggregate_id=instance.id,
                                         expected_version=instance.stream_version, events=commands, key=instance.key,
                                         topic=self.topic)
        instance.stream_version += len(stored)
        if instance.status == RUNNING:
            instance.command_event_id = _command_id(self.saga, instance, stored)

    @staticmethod
    async def _lock(conn: asyncpg.Connection, condition: str, value: Any, *,
                    skip_locked: bool = False) -> SagaInstance | None:
        if value is None:
            return None
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM sagas WHERE {condition} FOR UPDATE"
                                  + (" SKIP LOCKED" if skip_locked else ""), value)
        return _row_to_instance(row) if row else None


def _command_id(saga: Saga, instance: SagaInstance, stored: list[EventEnvelope]) -> str | None:
    """The stored event id of the current step's command (the last one of its type)."""
    step = saga.steps[instance.step]
    wanted = _declared(step.command, step, "command").event_type
    return next((str(e.event_id) for e in reversed(stored) if e.type == wanted), None)


def _values(instance: SagaInstance) -> list:
    return [instance.id, instance.saga, instance.key, instance.correlation_id, instance.data, instance.step,
            instance.status, instance.invoked, instance.pending,
            None if instance.failure is None else instance.failure.__dict__, instance.command_event_id,
            instance.deadline_at, instance.attempts, instance.abort_requested, instance.stream_version,
            instance.force_requested, instance.started_by]


def _setting(settings: Settings, name: str) -> timedelta:
    return timedelta(milliseconds=getattr(settings, name))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def encode_data(value: Any) -> Any:
    """Saga data is JSON: Decimal as strings, models as their JSON form."""
    return json.loads(json.dumps(value, default=str))
