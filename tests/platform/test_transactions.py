"""The consumer's transaction, opened by its idempotency record in one round trip."""
from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.db import TransactionRolledBack, literal, savepoint, transaction_opened_by


def record(event_id) -> str:
    return f"INSERT INTO processed_events (consumer, event_id) VALUES ({literal('g')}, {literal(event_id)})" \
           " ON CONFLICT DO NOTHING"


async def recorded(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM processed_events")


async def test_the_first_statement_reports_its_status_and_commits_with_the_block(pool):
    event_id = uuid.uuid4()
    async with pool.acquire() as conn:
        async with transaction_opened_by(conn, record(event_id)) as status:
            assert status == "INSERT 0 1" and conn.is_in_transaction()
            await conn.execute("INSERT INTO outbox (topic, key, value) VALUES ('t', 'k', '\\x01')")
        assert not conn.is_in_transaction()
        async with transaction_opened_by(conn, record(event_id)) as status:
            assert status == "INSERT 0 0"  # a duplicate
    assert await recorded(pool) == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_a_raising_block_rolls_back_the_first_statement_too(pool):
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with transaction_opened_by(conn, record(uuid.uuid4())):
                raise RuntimeError("handler failed")
        assert not conn.is_in_transaction()
        # A failing first statement leaves no aborted transaction behind on the connection.
        with pytest.raises(asyncpg.PostgresError):
            async with transaction_opened_by(conn, "INSERT INTO no_such_table VALUES (1)"):
                pass
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SELECT 1") == 1
    assert await recorded(pool) == 0


async def test_a_block_that_swallowed_a_failure_does_not_pass_for_committed(pool):
    async with pool.acquire() as conn:
        with pytest.raises(TransactionRolledBack):
            async with transaction_opened_by(conn, record(uuid.uuid4())):
                with pytest.raises(asyncpg.PostgresError):
                    await conn.execute("INSERT INTO no_such_table VALUES (1)")
        assert not conn.is_in_transaction()
    assert await recorded(pool) == 0


async def test_a_savepoint_undoes_only_its_own_block(pool):
    kept, undone = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        async with transaction_opened_by(conn, record(kept)):
            with pytest.raises(LookupError):
                async with savepoint(conn):
                    await conn.execute(record(undone))
                    raise LookupError("short of stock")
    assert [r["event_id"] for r in await pool.fetch("SELECT event_id FROM processed_events")] == [kept]


def test_literals_double_their_quotes():
    assert literal("it's") == "'it''s'"
