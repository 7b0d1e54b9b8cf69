"""A saga instance's row in its host's `sagas` table (shared/sql/004_sagas.sql and after): how
shared/saga_runner.py reads, locks, stores and changes it. Every statement on the table is here.

The row's `version` moves on with every change of it (a trigger, shared/sql/014_saga_versions.sql);
a drive that knows the row at a version records an answer on it with `record_answer`, which
stores nothing unless the row is still at that version."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import asyncpg

from shared.saga import Failure, SagaInstance

COLUMNS = ("id, saga, key, correlation_id, data, step, status, invoked, pending, failure, deadline_at, attempts,"
           " abort_requested, force_requested, started_by, retry_at, cause_event_id, call_attempts, retries, version")
# What an instance's row must still be at for `record_saga_answer`, else it fails with this.
MOVED_ON = "TS002"
# The columns the runner changes.
STATE = ("data", "step", "status", "invoked", "pending", "failure", "deadline_at", "attempts", "retry_at",
         "cause_event_id", "call_attempts", "retries")


def row_to_instance(row: asyncpg.Record) -> SagaInstance:
    values = dict(row)
    failure = values.pop("failure")
    return SagaInstance(**{**values, "invoked": list(values["invoked"]), "pending": list(values["pending"]),
                           "failure": Failure(**failure) if failure else None})


def _value(instance: SagaInstance, column: str) -> Any:
    value = getattr(instance, column)
    return value.__dict__ if isinstance(value, Failure) else value


def _json(instance: SagaInstance, columns: Sequence[str]) -> dict[str, Any]:
    return {column: value.isoformat() if isinstance(value := _value(instance, column), datetime) else value
            for column in columns}


def state_json(instance: SagaInstance) -> dict[str, Any]:
    """The columns the runner changes, as `record_saga_answer` reads them (jsonb_populate_record)."""
    return _json(instance, STATE)


def row_json(instance: SagaInstance) -> dict[str, Any]:
    """The instance's row as `start_saga` (shared/sql/015_start_saga.sql) stores it: what a host
    sends with the write that starts the saga."""
    return _json(instance, COLUMNS.split(", "))


async def insert(conn: asyncpg.Connection, instance: SagaInstance) -> None:
    await conn.execute("SELECT start_saga($1)", row_json(instance))


async def read(conn: asyncpg.Connection | asyncpg.Pool, saga_id: str) -> SagaInstance | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM sagas WHERE id = $1", saga_id)
    return row_to_instance(row) if row else None


async def lock(conn: asyncpg.Connection, condition: str, value: Any, *,
               skip_locked: bool = False) -> SagaInstance | None:
    if value is None:
        return None
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM sagas WHERE {condition} FOR UPDATE"
                              + (" SKIP LOCKED" if skip_locked else ""), value)
    return row_to_instance(row) if row else None


async def update(conn: asyncpg.Connection, instance: SagaInstance) -> None:
    assignments = ", ".join(f"{column} = ${i + 2}" for i, column in enumerate(STATE))
    status = f"${STATE.index('status') + 2}"
    await conn.execute(f"UPDATE sagas SET {assignments}, updated_at = now(), ended_at = CASE WHEN {status} IN"
                       " ('completed', 'failed') THEN now() END WHERE id = $1",
                       instance.id, *(_value(instance, column) for column in STATE))


async def record_answer(conn: asyncpg.Connection | asyncpg.Pool, consumer: str, event_id: Any,
                        known: SagaInstance, state: dict[str, Any]) -> int | None:
    """The answer's idempotency record and the instance's new `state`, on the row as `known` has
    it (its version): the row's new version, or None if the answer was recorded before (nothing
    changed). Raises (SQLSTATE MOVED_ON) when the row moved on since: nothing was stored."""
    return await conn.fetchval("SELECT record_saga_answer($1, $2, $3, $4, $5)", consumer, event_id, known.id,
                               known.version, state)
