"""Event store: optimistic concurrency and a gap-free global order, on real PostgreSQL."""
from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from shared.db import migrate, migration_files
from shared.eventstore import Alongside, ConcurrencyConflict, EventStore
from tests.helpers.events import Ticked


async def append_one(pool, store, stream: str, expected: int, n: int = 0):
    async with pool.acquire() as conn, conn.transaction():
        return await store.append(conn, aggregate_type="Test", aggregate_id=stream,
                                  expected_version=expected, events=[Ticked(n=n)])


async def test_concurrent_appends_at_one_version_exactly_one_wins(pool, schema):
    store = EventStore(schema, "unused")
    results = await asyncio.gather(*(append_one(pool, store, "S-1", 0, n) for n in range(20)),
                                   return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, ConcurrencyConflict)]
    assert len(winners) == 1 and len(conflicts) == 19
    stream = await store.load_stream(pool, "Test", "S-1")
    assert [e.sequence for e in stream] == [1]
    assert stream[0].event_id == winners[0][0].event_id
    # The loser can reload and append at the next version.
    await append_one(pool, store, "S-1", 1)
    assert [e.sequence for e in await store.load_stream(pool, "Test", "S-1")] == [1, 2]


async def test_a_projecting_append_requires_a_transaction_and_the_envelope_is_stamped(pool, schema):
    store = EventStore(schema, "topic.x")

    async def project(conn, envelopes):
        await conn.execute("INSERT INTO processed_events (consumer, event_id) VALUES ('view', $1)",
                           envelopes[0].event_id)

    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await store.append(conn, aggregate_type="Test", aggregate_id="S", expected_version=0,
                               events=[Ticked(n=1)], project=project)
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 0
    [stored] = await append_one(pool, store, "S", 0, 7)
    [loaded] = await store.load_stream(pool, "Test", "S")
    assert loaded == stored
    assert loaded.type == "test.Ticked" and loaded.version == 1 and loaded.payload == {"n": 7}
    assert loaded.correlation_id and loaded.occurred_at.tzinfo is not None
    outbox = await pool.fetch("SELECT topic, key, value FROM outbox")
    assert [(r["topic"], r["key"]) for r in outbox] == [("topic.x", "S")]


async def test_an_append_alone_commits_atomically_without_a_transaction(pool, schema):
    store = EventStore(schema, "topic.x")
    async with pool.acquire() as conn:
        stored = await store.append(conn, aggregate_type="Test", aggregate_id="A", expected_version=0,
                                    events=[Ticked(n=1), Ticked(n=2)])
        assert not conn.is_in_transaction()
        with pytest.raises(ConcurrencyConflict):  # the version guard holds outside a transaction too
            await store.append(conn, aggregate_type="Test", aggregate_id="A", expected_version=1,
                               events=[Ticked(n=3)])
    assert [e.sequence for e in await store.load_stream(pool, "Test", "A")] == [1, 2]
    assert [e.position for e in stored] == sorted(e.position for e in stored)
    # The refused append left nothing behind: two events, two outbox rows.
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 2


async def test_a_write_alongside_commits_with_the_events_in_their_one_statement_or_not_at_all(pool, schema):
    """Alongside: the command's own write (the test gateway's card token) as a CTE of the append."""
    store = EventStore(schema, "topic.x")
    await pool.execute("CREATE TABLE kept (stream text, note text)")
    sent: list[str] = []
    async with pool.acquire() as conn:
        conn.add_query_logger(lambda record: sent.append(record.query))
        await store.append(conn, aggregate_type="Test", aggregate_id="A", expected_version=0, events=[Ticked(n=1)],
                           project=Alongside("INSERT INTO kept (stream, note) VALUES ($1, $2)", ("A", "first")))
        await asyncio.sleep(0.05)  # query loggers are called soon after, not at once
        ours = [q for q in sent if "append_events(" in q]  # (asyncpg introspects a new statement's types first)
        assert len(ours) == 1 and ours[0].startswith("WITH alongside AS (INSERT INTO kept"), sent
        with pytest.raises(ConcurrencyConflict):  # a stale version: neither the events nor the write
            await store.append(conn, aggregate_type="Test", aggregate_id="A", expected_version=0,
                               events=[Ticked(n=2)],
                               project=Alongside("INSERT INTO kept (stream, note) VALUES ($1, $2)", ("A", "stale")))
        async with conn.transaction():  # in the caller's transaction, a statement of its own before the append
            await store.append(conn, aggregate_type="Test", aggregate_id="B", expected_version=0,
                               events=[Ticked(n=3)],
                               project=Alongside("INSERT INTO kept (stream, note) VALUES ($1, $2)", ("B", "in")))
    assert [tuple(r) for r in await pool.fetch("SELECT stream, note FROM kept ORDER BY stream")] == [
        ("A", "first"), ("B", "in")]
    assert await pool.fetchval("SELECT count(*) FROM events") == 2


class UnlockedStore(EventStore):
    """The naive store: a plain sequence with no writer serialisation (the control)."""

    append_statement = """
        WITH stored AS (
            INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, type, version,
                                occurred_at, correlation_id, causation_id, payload)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::int[],
                                 $7::timestamptz[], $8::text[], $9::text[], $10::jsonb[])
            RETURNING position, event_id
        ), queued AS (
            INSERT INTO outbox (topic, key, value, headers)
            SELECT $11, $12, m.value, m.headers::jsonb FROM unnest($13::bytea[], $14::text[]) AS m(value, headers)
        )
        SELECT stored.position, stored.event_id FROM stored, (SELECT pg_notify($15, ''), $16::text) AS wake"""


async def _late_commit_scenario(pool, store) -> tuple[list[int], list[int]]:
    """T1 takes a position but commits after T2; returns (positions seen, positions stored)."""
    seen: list[int] = []

    async def follow_once():
        last = seen[-1] if seen else 0
        seen.extend(e.position for e in await store.read_after(pool, last))

    t1 = await pool.acquire()
    tx1 = t1.transaction()
    await tx1.start()
    await store.append(t1, aggregate_type="Test", aggregate_id="A", expected_version=0, events=[Ticked(n=1)])
    t2 = asyncio.create_task(append_one(pool, store, "B", 0))
    await asyncio.sleep(0.3)  # T2 either committed (unlocked) or waits for T1's lock
    await follow_once()
    await tx1.commit()
    await pool.release(t1)
    await t2
    await follow_once()
    stored = [r["position"] for r in await pool.fetch("SELECT position FROM events ORDER BY position")]
    return seen, stored


async def test_follower_never_skips_a_late_commit(pool, schema):
    seen, stored = await _late_commit_scenario(pool, EventStore(schema, "unused"))
    assert seen == stored and len(stored) == 2


async def test_control_a_plain_sequence_skips_the_late_commit(stack, pool, schema):
    # Proves the scenario above really exercises the hazard the lock prevents.
    seen, stored = await _late_commit_scenario(pool, UnlockedStore(schema, "unused"))
    assert len(stored) == 2 and seen == [stored[1]]


async def test_gap_free_follower_under_many_concurrent_writers(pool, schema):
    store = EventStore(schema, "unused")
    writers, transactions_each = 12, 40
    done = asyncio.Event()

    async def writer(w: int):
        rng = random.Random(w)
        version = 0
        for t in range(transactions_each):
            batch = rng.randint(1, 3)
            async with pool.acquire() as conn, conn.transaction():
                await store.append(conn, aggregate_type="Test", aggregate_id=f"W{w}",
                                   expected_version=version, events=[Ticked(n=t)] * batch)
                # Hold the transaction open a little: without serialisation this is
                # exactly when a later position would commit first.
                await asyncio.sleep(rng.random() * 0.004)
            version += batch

    seen: list[int] = []

    async def follower():
        last = 0
        while True:
            finished = done.is_set()
            for event in await store.read_after(pool, last, limit=50):
                assert event.position > last
                seen.append(event.position)
                last = event.position
            if finished:
                return
            await asyncio.sleep(0.001)

    follow = asyncio.create_task(follower())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    await follow
    stored = [r["position"] for r in await pool.fetch("SELECT position FROM events ORDER BY position")]
    assert len(stored) > writers * transactions_each
    assert seen == stored  # every event, once, in order: nothing skipped


async def test_migrations_are_safe_from_several_instances_at_once(stack, unique):
    name = f"m_{unique}"
    results = await asyncio.gather(*(migrate(stack.database_url, name) for _ in range(6)))
    applied = sorted(v for r in results for v in r)
    expected = [version for version, _ in migration_files(None)]
    assert applied == expected and len(expected) >= 2  # each applied by exactly one instance
    conn = await asyncpg.connect(stack.database_url)
    try:
        assert await conn.fetchval(f'SELECT count(*) FROM "{name}".schema_migrations') == len(expected)
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()
