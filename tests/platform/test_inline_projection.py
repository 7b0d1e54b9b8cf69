"""Inline projections (shared/inline.py, applied by shared/eventstore.py): a subscriber of a store applied in the
transaction that appends to it, on the appending service's connection, in its own schema."""
from __future__ import annotations

import asyncpg
import pytest

from shared.eventstore import EventStore
from shared.inline import InlineProjection, forget_inline, project_inline
from tests.conftest import fresh_schema
from tests.helpers.events import Ticked


@pytest.fixture
async def subscriber_schema(stack, unique):
    async with fresh_schema(stack, f"s_{unique}") as name:
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(f'CREATE TABLE "{name}".seen (event_id uuid PRIMARY KEY, n int NOT NULL)')
        finally:
            await conn.close()
        yield name


@pytest.fixture
def inline(schema):
    yield lambda projection: project_inline(schema, projection)
    forget_inline(schema)


def remembering(subscriber: str, *, fail_on: int | None = None):
    async def handler(conn, envelope):
        if envelope.payload["n"] == fail_on:
            raise RuntimeError("the fold failed")
        await conn.execute(f'INSERT INTO "{subscriber}".seen (event_id, n) VALUES ($1, $2)',
                           envelope.event_id, envelope.payload["n"])
    return handler


async def counts(pool, schema: str, subscriber: str) -> tuple[int, int, int]:
    return (await pool.fetchval(f'SELECT count(*) FROM "{schema}".events'),
            await pool.fetchval(f'SELECT count(*) FROM "{subscriber}".seen'),
            await pool.fetchval(f'SELECT count(*) FROM "{subscriber}".processed_events WHERE consumer = $1', "s.view"))


async def test_an_append_applies_the_subscriber_in_its_transaction_and_records_it(pool, schema, subscriber_schema,
                                                                                 inline):
    inline(InlineProjection(consumer="s.view", schema=subscriber_schema, handler=remembering(subscriber_schema)))
    # Wired twice (a host started again in the same process): applied once.
    inline(InlineProjection(consumer="s.view", schema=subscriber_schema, handler=remembering(subscriber_schema)))
    store = EventStore(schema, "topic.x")
    async with pool.acquire() as conn:
        # Outside a transaction the append opens one: the subscriber commits with the events.
        stored = await store.append(conn, aggregate_type="Test", aggregate_id="S-1", expected_version=0,
                                    events=[Ticked(n=1), Ticked(n=2)])
        assert not conn.is_in_transaction()
    assert await counts(pool, schema, subscriber_schema) == (2, 2, 2)
    recorded = {r["event_id"] for r in await pool.fetch(
        f'SELECT event_id FROM "{subscriber_schema}".processed_events WHERE consumer = $1', "s.view")}
    assert recorded == {e.event_id for e in stored}  # its Kafka consumer will pass them over

    # Within the producer's transaction, after the append, its own tables are its own again.
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, aggregate_type="Test", aggregate_id="S-1", expected_version=2, events=[Ticked(n=3)])
        assert await conn.fetchval("SELECT current_schema()") == schema
        assert await conn.fetchval("SELECT count(*) FROM events") == 3  # unqualified: the producer's


async def test_a_failing_subscriber_fails_the_append_and_nothing_is_stored(pool, schema, subscriber_schema, inline):
    inline(InlineProjection(consumer="s.view", schema=subscriber_schema,
                            handler=remembering(subscriber_schema, fail_on=2)))
    store = EventStore(schema, "topic.x")
    with pytest.raises(RuntimeError, match="the fold failed"):
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, aggregate_type="Test", aggregate_id="S-1", expected_version=0,
                               events=[Ticked(n=1), Ticked(n=2)])
    assert await counts(pool, schema, subscriber_schema) == (0, 0, 0)


async def test_only_the_event_types_it_wants(pool, schema, subscriber_schema, inline):
    inline(InlineProjection(consumer="s.view", schema=subscriber_schema, handler=remembering(subscriber_schema),
                            event_types=frozenset({"test.Other"})))
    store = EventStore(schema, "topic.x")
    async with pool.acquire() as conn:
        await store.append(conn, aggregate_type="Test", aggregate_id="S-1", expected_version=0, events=[Ticked(n=1)])
    assert await counts(pool, schema, subscriber_schema) == (1, 0, 0)
