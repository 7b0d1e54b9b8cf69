"""Sagas as definitions: what decides, pure. The runner that carries them out is
shared/saga_runner.py.

A saga is a tuple of `Step`s read top to bottom, like Eventuate Tram's
`step().invokeParticipant(...).onReply(...).withCompensation(...)`: each step names the
participant's operation it calls through the participant's interface (`call=lambda peers:
peers.cart.lock_cart`), what each answer means, the operation that undoes it, and its
deadline. The last step is the pivot, run locally on the host aggregate. A step's name is
its operation's (`lock_cart`), read from the interface: no operation is named by a string.

When a step fails (a failing answer, a missed deadline, a call that keeps failing, or an
operator's abort), every step invoked so far is undone, the failing one included, as its
participant may have acted before the failure was known. The undos are independent of each
other, so they are called together; the saga ends once each is answered (an undo not
answered is called again: participants answer a request once), or when an operator forces
it to (`force_requested`): it then fails at once, its failure naming the undos left
unanswered, for someone to see to by hand.

Everything here (`Saga.begin`, `answered`, `expired`, `call_failed`, `due_calls`) is pure and
tested without a database or broker (tests/unit/test_completion_saga.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Awaitable, Callable, Mapping

import asyncpg

from shared.aggregate import Aggregate
from shared.envelope import DomainEvent
from shared.settings import Settings

RUNNING, COMPENSATING, COMPLETED, FAILED = "running", "compensating", "completed", "failed"
# The longest wait before a step whose reply was not recorded is called again.
RETRY_CAP = timedelta(seconds=5)


@dataclass(frozen=True)
class Failure:
    """Why a saga failed: a stable `code`, a `message` for people, and the state the host
    goes back to once every undo is done."""
    code: str
    message: str
    state: str
    unanswered: tuple[str, ...] = ()  # undos an operator stopped waiting for (a forced end)


@dataclass
class SagaInstance:
    id: str                 # the request id every call and answer carries (`saga_id`)
    saga: str
    key: str                # the host aggregate's id (the order number)
    correlation_id: str
    data: dict[str, Any]    # what the steps learnt so far (JSON values)
    step: int = 0
    status: str = RUNNING
    invoked: list[str] = field(default_factory=list)   # steps called
    pending: list[str] = field(default_factory=list)   # undos not yet answered
    failure: Failure | None = None
    deadline_at: datetime | None = None
    attempts: int = 0       # undos called again after their deadline
    abort_requested: bool = False
    force_requested: bool = False  # an operator's order to stop waiting for the undos
    started_by: str | None = None  # the event that started it (CompletionRequested)
    retry_at: datetime | None = None  # when a call whose reply was not recorded is made again
    cause_event_id: str | None = None  # what made it take its current step: the cause of the calls
    call_attempts: int = 0  # calls of the current step that failed (not an outage)
    retries: int = 0        # calls made again of the current step (or undos)
    version: int = 0        # every change of its row moves it on (shared/sql/014_saga_versions.sql)


# An answer moves the saga on with new data (a dict) or fails it (a Failure).
Answer = Callable[[SagaInstance, Any], "dict[str, Any] | Failure"]
# A participant's operation, picked from the peers (`lambda peers: peers.cart.lock_cart`).
Operation = Callable[[Any], Callable[..., Awaitable[Any]]]


def no_arguments(instance: SagaInstance) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Step:
    """One step. A participant's step calls `call(peers)(<key>, saga_id=<saga id>,
    **arguments(instance))`, whose reply holds one of the events in `answers`; a failed
    saga calls `undo(peers)(<key>, saga_id=...)`, answered by `compensated_by`. A local step
    (`run`) acts on the host aggregate itself: the pivot. `name` and `participant` are read
    from the operation (filled in by `Saga`)."""
    call: Operation | None = None
    arguments: Callable[[SagaInstance], dict[str, Any]] = no_arguments
    answers: Mapping[type[DomainEvent], Answer] = field(default_factory=dict)
    undo: Operation | None = None
    compensated_by: type[DomainEvent] | None = None
    deadline: str | None = None          # the Settings field holding it, in milliseconds
    on_timeout: Failure | None = None    # its failure's state is also a failed call's
    when: Callable[[SagaInstance], bool] = lambda instance: True
    # A local step: run on the host aggregate with the host's settings (the pivot).
    run: Callable[[asyncpg.Connection, Aggregate, SagaInstance, Settings], Awaitable[None]] | None = None
    name: str = ""
    participant: str = ""
    interface: str = ""  # the participant's interface (e.g. CartService), for the diagram

    @property
    def local(self) -> bool:
        return self.run is not None


@dataclass(frozen=True)
class Call:
    """A call the runner makes: step `step`'s operation (or its undo) with `arguments`
    besides the key and the saga id."""
    step: str
    undo: bool = False
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    """What the runner does next: make `calls`, run a local step, or end."""
    calls: list[Call] = field(default_factory=list)
    local: Step | None = None
    finished: str | None = None  # COMPLETED or FAILED


def _named(operation: Operation, interfaces: Mapping[str, type]) -> tuple[str, str, str]:
    """(participant, operation's name, interface's name) of `lambda peers: peers.x.y`, read
    by calling it on the interfaces themselves."""
    function = operation(SimpleNamespace(**interfaces))
    participant = next(name for name, interface in interfaces.items()
                       if getattr(interface, function.__name__, None) is function)
    return participant, function.__name__, interfaces[participant].__name__


@dataclass(frozen=True)
class Saga:
    name: str
    steps: tuple[Step, ...]
    # The end of a failed saga on the host aggregate (e.g. the order back in `payment`).
    on_failed: Callable[[Aggregate, SagaInstance], None]
    # The participants' interfaces, by the name the host's peers give them.
    interfaces: Mapping[str, type] = field(default_factory=dict)
    host: str = "order"
    compensation_retry: str = "saga_compensation_retry_ms"  # a Settings field, in milliseconds

    def __post_init__(self) -> None:
        named = []
        for step in self.steps:
            if step.local:
                named.append(replace(step, name=step.name or _declared(step.run, step, "run").__name__,
                                    participant=self.host))
                continue
            participant, operation, interface = _named(_declared(step.call, step, "call"), self.interfaces)
            if step.undo is not None and _named(step.undo, self.interfaces)[0] != participant:
                raise ValueError(f"step {operation!r} is undone by another participant")
            named.append(replace(step, name=operation, participant=participant, interface=interface))
        object.__setattr__(self, "steps", tuple(named))

    def step_named(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)

    @property
    def participants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(step.participant for step in self.steps if not step.local))

    def listens_to(self) -> tuple[type[DomainEvent], ...]:
        """Every event that can move an instance on: the answers and the undos' answers (on
        the participants' topics)."""
        answers = [answer for step in self.steps for answer in step.answers]
        return tuple(dict.fromkeys([*answers, *(s.compensated_by for s in self.steps if s.compensated_by)]))

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
            return self._end(instance, FAILED)
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
            # Undos after a timeout or an abort are caused by the request that started it.
            instance.cause_event_id = instance.started_by
            return self._fail(instance, failure, settings, now)
        if instance.status == COMPENSATING and instance.force_requested:
            # A compensating saga always has the failure that started its undos.
            assert instance.failure is not None
            instance.failure = replace(instance.failure, unanswered=tuple(instance.pending))
            instance.pending = []
            return self._end(instance, FAILED)
        if instance.status == COMPENSATING:
            # Undos not answered in time are called again; participants answer once.
            instance.attempts += 1
            instance.deadline_at = now + min(_setting(settings, self.compensation_retry) * 2 ** instance.attempts,
                                             timedelta(minutes=5))
            return Decision(calls=self.due_calls(instance))
        return None

    def call_failed(self, instance: SagaInstance, call: Call, error: str, settings: Settings,
                    now: datetime) -> Decision | None:
        """A call raised (not an outage: the participant refused or broke). The current step
        fails after `saga_step_max_attempts` such calls; an undo is called again until answered."""
        if instance.status != RUNNING or call.undo or self.steps[instance.step].name != call.step:
            return None
        instance.call_attempts += 1
        if instance.call_attempts < settings.saga_step_max_attempts:
            instance.retry_at = now + _setting(settings, "saga_step_retry_ms")
            return Decision()
        step = self.steps[instance.step]
        state = (step.on_timeout or Failure("step_failed", "", "confirm")).state
        return self._fail(instance, Failure("step_failed", f"The {step.name} step failed: {error}"[:500], state),
                          settings, now)

    def retried(self, instance: SagaInstance, settings: Settings, now: datetime) -> list[Call]:
        """The reply of a call was not recorded by `retry_at`: the calls to make again, the
        next retry later (doubling, up to RETRY_CAP)."""
        instance.retries += 1
        instance.retry_at = now + min(_setting(settings, "saga_step_retry_ms") * 2 ** instance.retries, RETRY_CAP)
        return self.due_calls(instance)

    def due_calls(self, instance: SagaInstance) -> list[Call]:
        """What an instance in its state waits for: its current step's call, or its undos."""
        if instance.status == RUNNING and not self.steps[instance.step].local:
            step = self.steps[instance.step]
            return [Call(step.name, arguments=step.arguments(instance))]
        if instance.status == COMPENSATING:
            return [Call(name, undo=True) for name in instance.pending]
        return []

    def _enter(self, instance: SagaInstance, index: int, settings: Settings, now: datetime) -> Decision:
        while index < len(self.steps) and not self.steps[index].when(instance):
            index += 1
        if index == len(self.steps):
            return self._end(instance, COMPLETED)
        step = self.steps[index]
        instance.step = index
        if step.local:
            instance.deadline_at = instance.retry_at = None
            return Decision(local=step)
        instance.invoked.append(step.name)
        instance.deadline_at = now + _setting(settings, step.deadline) if step.deadline else None
        instance.retry_at = now + _setting(settings, "saga_step_retry_ms")
        instance.call_attempts = instance.retries = 0
        return Decision(calls=self.due_calls(instance))

    def _fail(self, instance: SagaInstance, failure: Failure, settings: Settings, now: datetime) -> Decision:
        instance.failure = failure
        instance.pending = [name for name in reversed(instance.invoked) if self.step_named(name).undo]
        if not instance.pending:
            return self._end(instance, FAILED)
        instance.status = COMPENSATING
        instance.deadline_at = now + _setting(settings, self.compensation_retry)
        instance.retry_at = now + _setting(settings, "saga_step_retry_ms")
        instance.retries = 0
        return Decision(calls=self.due_calls(instance))

    @staticmethod
    def _end(instance: SagaInstance, status: str) -> Decision:
        instance.status, instance.deadline_at, instance.retry_at = status, None, None
        return Decision(finished=status)

    # -- documentation ----------------------------------------------------------------
    def mermaid(self) -> str:
        """The saga as a Mermaid sequence diagram (the README's is this, checked by a test)."""
        host = self.host
        lines = ["sequenceDiagram", f"    participant {host}"]
        lines += [f"    participant {p}" for p in dict.fromkeys(s.participant for s in self.steps) if p != host]
        for step in self.steps:
            if step.local:
                lines.append(f"    Note over {host}: {step.name}: the pivot, local (it cannot fail)")
                continue
            condition = f" [{step.when.__doc__.strip()}]" if step.when.__doc__ else ""
            deadline = _declared(step.deadline, step, "deadline")
            lines.append(f"    {host}->>{step.participant}: {step.name}{condition}: {step.interface}.{step.name}"
                         f" (deadline {deadline.upper()})")
            lines += [f"    {step.participant}-->>{host}: {answer.event_type}" for answer in step.answers]
            if step.undo is not None:
                undone_by = _declared(step.compensated_by, step, "compensated_by")
                undo = _named(step.undo, self.interfaces)[1]
                lines.append(f"    Note over {host},{step.participant}: undo: {step.interface}.{undo}"
                             f" → {undone_by.event_type}")
        return "\n".join(lines)


def _declared(part: Any, step: Step, name: str) -> Any:
    """A part of `step` its kind must have (a participant's call, a local step's `run`)."""
    if part is None:
        raise ValueError(f"saga step {step.name!r} has no {name}")
    return part


def _setting(settings: Settings, name: str) -> timedelta:
    return timedelta(milliseconds=getattr(settings, name))


def encode_data(value: Any) -> Any:
    """Saga data is JSON: Decimal as strings, models as their JSON form."""
    return json.loads(json.dumps(value, default=str))
