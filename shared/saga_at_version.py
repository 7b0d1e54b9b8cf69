"""Recording a saga's answers on its row as the drive knows it (its version), without reading it:
the part of shared/saga_runner.py's SagaRunner that does it (module doc there).

An answer that needs no host is recorded in one statement (`record_saga_answer`). One that
leads to local steps (the pivot) is recorded in their transaction: first `record_saga_answer`
with the state the steps end in, which locks the row before the host as the long way does (an
answer's record, the row, then the host's view and stream), then the steps on the host, whose
write reads what it left (`reading_the_write`). The steps' end state is computed before they run
(the completion's pivot changes nothing of the instance); should a step change it after all,
the transaction rolls back and the answer is recorded the long way, as when the row moved on or
the host's state was behind: nothing is stored by a try that fails.
"""
from __future__ import annotations

from datetime import datetime, timezone

import asyncpg

from shared import db, metrics, saga_rows
from shared.copying import state_copy
from shared.envelope import EventEnvelope, decode_event
from shared.eventstore import ConcurrencyConflict, reading_the_write
from shared.faults import crash_point
from shared.inline import remember_applied
from shared.saga import FAILED, Decision, Saga, SagaInstance
from shared.saga_rows import MOVED_ON, state_json
from shared.settings import Settings


class _NotAtVersion(Exception):
    """An answer leading to a local step that cannot be recorded on the row as the drive knew
    it (`_local_at_version`): its transaction rolls back, and it is recorded the long way."""


class _RecordedBefore(Exception):
    """The answer's idempotency record was there: its transaction rolls back, nothing changed."""


class AnswersAtVersion:
    """SagaRunner's recording at a version: what it uses of the runner (its saga, settings, the
    host's subscription's name, pool, and the local steps on the host)."""
    saga: Saga
    settings: Settings
    consumer: str
    pool: asyncpg.Pool | None

    async def _on_host(self, conn: asyncpg.Connection, instance: SagaInstance, decision: Decision) -> SagaInstance:
        raise NotImplementedError

    async def _record_at_version(self, current: SagaInstance, envelope: EventEnvelope,
                                 ended: list) -> SagaInstance | bool | None:
        """An answer that moves the instance on without a failure, recorded on the row as
        `current` says it is (`record_saga_answer`): in one statement when it needs no host,
        else with the local steps it leads to (`_local_at_version`). The instance as stored
        after it; False if the answer was recorded before (by Kafka: the instance is then
        unknown here); None when this cannot be done (a failure, or the row moved on since:
        nothing was stored), to record it the long way."""
        assert self.pool is not None
        event = decode_event(envelope)
        if getattr(event, "request_id", None) != current.id:
            return None
        moved = state_copy(current)
        decision = self.saga.answered(moved, event, self.settings, datetime.now(timezone.utc))
        if decision is None or decision.finished == FAILED:
            return None
        moved.cause_event_id = str(envelope.event_id)  # the cause of the next calls
        if decision.local is not None:
            return await self._local_at_version(current, moved, decision, envelope, ended)
        crash_point("saga.before_commit")  # the step is decided, not yet committed
        try:
            version = await saga_rows.record_answer(self.pool, self.consumer, envelope.event_id, current,
                                                    state_json(moved))
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != MOVED_ON:
                raise
            return None
        if version is None:  # recorded before: passed over from Kafka all the same
            remember_applied(self.consumer, [str(envelope.event_id)])
            return False
        metrics.SAGA_ANSWERS.labels(self.saga.name, "one_statement").inc()
        moved.version = version
        remember_applied(self.consumer, [str(envelope.event_id)])
        return moved

    async def _local_at_version(self, current: SagaInstance, moved: SagaInstance, decision: Decision,
                                envelope: EventEnvelope, ended: list) -> SagaInstance | bool | None:
        """An answer that leads to local steps (the pivot), recorded in one transaction on the
        row as `current` says it is, without reading it: `record_saga_answer` with the state
        the steps end in (computed first, as the steps change nothing of the instance: checked
        before the commit), then the steps on the host, whose write reads what it left
        (`ended` gets it). The row is locked by that first statement before the host is, as
        on the long way. None when it moved on, the host's state was behind, or the steps did
        change the instance: rolled back, nothing stored, to record it the long way."""
        assert self.pool is not None
        after = state_copy(moved)
        outcome = decision
        while outcome.local is not None:
            outcome = self.saga.after_local(after, self.settings, datetime.now(timezone.utc))
        if outcome.finished == FAILED:
            return None
        state = state_json(after)
        written: list = []
        try:
            async with self.pool.acquire() as conn, db.transaction(conn):
                version = await saga_rows.record_answer(conn, self.consumer, envelope.event_id, current, state)
                if version is None:
                    raise _RecordedBefore
                with reading_the_write() as written:
                    instance = await self._on_host(conn, moved, decision)
                if state_json(instance) != state:
                    raise _NotAtVersion
        except _RecordedBefore:
            remember_applied(self.consumer, [str(envelope.event_id)])
            return False
        except asyncpg.PostgresError as exc:
            if exc.sqlstate != MOVED_ON:
                raise
            return None
        except (_NotAtVersion, ConcurrencyConflict):
            return None
        metrics.SAGA_ANSWERS.labels(self.saga.name, "local_at_version").inc()
        after.version = version
        remember_applied(self.consumer, [str(envelope.event_id)])
        ended[:] = written[:1]
        return after
