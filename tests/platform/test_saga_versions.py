"""A saga instance's version (shared/sql/014_saga_versions.sql) and `record_saga_answer`: the
drive records an answer in one statement on the row as it knew it, or not at all."""
from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from shared.saga_rows import MOVED_ON

STATE = {"data": {"locked": True}, "step": 1, "status": "running", "invoked": ["lock_cart", "allocate_stock"],
         "pending": [], "failure": None, "deadline_at": "2026-12-07T06:00:00+00:00", "attempts": 0,
         "retry_at": "2026-12-07T05:59:00+00:00", "cause_event_id": "e-1", "call_attempts": 0, "retries": 0}


async def saga_row(pool, saga_id: str) -> dict:
    return dict(await pool.fetchrow("SELECT * FROM sagas WHERE id = $1", saga_id))


@pytest.fixture
async def saga(pool):
    saga_id = f"S-{uuid.uuid4().hex[:8]}"
    await pool.execute("INSERT INTO sagas (id, saga, key, correlation_id, data, step, status, invoked, started_at,"
                       " updated_at) VALUES ($1, 'completion', 'R1', 'c', '{}', 0, 'running', '{lock_cart}', now(),"
                       " now())", saga_id)
    return saga_id


async def record(pool, saga_id: str, version: int, event_id: uuid.UUID, state: dict = STATE):
    return await pool.fetchval("SELECT record_saga_answer($1, $2, $3, $4, $5)", "order.saga", event_id, saga_id,
                               version, state)


async def test_an_answer_is_recorded_with_the_state_at_the_version_the_drive_knew(pool, saga):
    event_id = uuid.uuid4()
    assert await record(pool, saga, 0, event_id) == 1
    row = await saga_row(pool, saga)
    assert row["version"] == 1 and row["step"] == 1 and row["invoked"] == ["lock_cart", "allocate_stock"]
    assert row["data"] == {"locked": True} and row["deadline_at"].isoformat() == STATE["deadline_at"]
    assert row["ended_at"] is None
    assert await pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id = $1", event_id) == 1
    # The same answer again (its copy from Kafka came first, say): nothing changes.
    assert await record(pool, saga, 1, event_id, {**STATE, "step": 7}) is None
    assert (await saga_row(pool, saga))["step"] == 1


async def test_a_row_moved_on_meanwhile_stores_nothing(pool, saga):
    # An operator's abort (any change of the row) moves the version on: the drive's knowledge is stale.
    await pool.execute("UPDATE sagas SET abort_requested = true WHERE id = $1", saga)
    assert (await saga_row(pool, saga))["version"] == 1
    event_id = uuid.uuid4()
    with pytest.raises(asyncpg.PostgresError) as raised:
        await record(pool, saga, 0, event_id)
    assert raised.value.sqlstate == MOVED_ON
    assert await pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id = $1", event_id) == 0
    row = await saga_row(pool, saga)
    assert row["step"] == 0 and row["abort_requested"] and row["version"] == 1
    assert await record(pool, saga, 1, event_id, {**STATE, "status": "completed"}) == 2
    assert (await saga_row(pool, saga))["ended_at"] is not None


def test_the_state_recorded_is_what_the_runner_changes():
    from shared.saga_rows import STATE as RUNNER_STATE
    assert set(STATE) == set(RUNNER_STATE)
    json.dumps(STATE)
