"""A key's messages waiting together are applied in one transaction (shared/consumer.py,
`IdempotentHandler._apply_run`), through the real broker and PostgreSQL: fewer `BEGIN`s,
`COMMIT`s and idempotency inserts, and still one bad message holds back no other."""
from __future__ import annotations

import asyncio
import time

import asyncpg

from shared.eventstore import EventStore
from shared.kafka import dlq_topic
from tests.helpers.events import Exploded, Ticked
from tests.helpers.kafka import consuming, message, publish, read_topic, until_waiting_for_the_lock

HELD = 4444


def recording(store: EventStore | None = None, append_at: int | None = None):
    """A handler recording (n, its transaction); n = 1 first waits for the test's advisory
    lock, so the messages published meanwhile wait together; n = `append_at` also appends
    an event to `store`."""
    async def handle(conn, envelope):
        if envelope.type == Exploded.event_type:
            raise RuntimeError("cannot handle this one")
        n = envelope.payload["n"]
        if n == 1:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", HELD)
        await conn.execute("INSERT INTO effects (n, tx) VALUES ($1, txid_current())", n)
        if n == append_at:
            await store.append(conn, aggregate_type="Test", aggregate_id="S", expected_version=0,
                               events=[Ticked(n=n)])
    return handle


async def run_behind_a_slow_first(stack, pool, unique, handler, later: list, expected_effects: int,
                                  **settings_overrides) -> dict[int, int]:
    """Publishes A's first message, holds it in its handler until A's `later` messages are
    published, then lets go; returns each n's transaction once `expected_effects` are in."""
    settings = stack.settings(kafka_topic_partitions=1, **settings_overrides)
    topic = f"runs.{unique}"
    await pool.execute("CREATE TABLE effects (n int NOT NULL, tx bigint NOT NULL)")
    await publish(settings, topic, [message(Ticked(n=1), stream="A", sequence=1)[1]])
    blocker = await asyncpg.connect(stack.database_url)
    await blocker.execute("SELECT pg_advisory_lock($1)", HELD)
    try:
        async with consuming(settings, pool, topic, f"g-{unique}", handler) as task:
            deadline = time.monotonic() + 45
            await until_waiting_for_the_lock(blocker, HELD, task, deadline)
            await publish(settings, topic, later)
            await asyncio.sleep(0.5)  # fetched, and waiting behind A's first
            await blocker.execute("SELECT pg_advisory_unlock($1)", HELD)
            while await pool.fetchval("SELECT count(*) FROM effects") < expected_effects:
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, "not every message was handled"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        return {r["n"]: r["tx"] for r in await pool.fetch("SELECT n, tx FROM effects")}
    finally:
        await blocker.close()


async def test_a_keys_messages_waiting_together_are_applied_in_one_transaction(stack, pool, unique):
    later = [message(Ticked(n=n), stream="A", sequence=n)[1] for n in range(2, 6)]
    tx = await run_behind_a_slow_first(stack, pool, unique, recording(), later, expected_effects=5)
    assert sorted(tx) == [1, 2, 3, 4, 5]
    assert len({tx[n] for n in (2, 3, 4, 5)}) == 1  # one transaction for the four that waited
    assert tx[2] != tx[1]
    # Each message still has its idempotency record: a redelivery of any of them changes nothing.
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 5


async def test_a_run_ends_after_a_message_whose_handling_appended(stack, pool, schema, unique):
    """An append holds the store's table lock until commit: the run's transaction ends there
    and the rest goes in the next."""
    store = EventStore(schema, f"unused.{unique}")
    later = [message(Ticked(n=n), stream="A", sequence=n)[1] for n in range(2, 6)]
    tx = await run_behind_a_slow_first(stack, pool, unique, recording(store, append_at=3), later,
                                       expected_effects=5)
    assert tx[2] == tx[3] and tx[4] == tx[5] and tx[3] != tx[4]
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 5
    assert [e.payload["n"] for e in await store.load_stream(pool, "Test", "S")] == [3]


async def test_a_failing_message_in_a_run_is_retried_alone_and_holds_back_no_other(stack, pool, unique):
    later = [message(Ticked(n=2), stream="A", sequence=2)[1], message(Exploded(reason="x"), stream="A", sequence=3)[1],
             message(Ticked(n=4), stream="A", sequence=4)[1]]
    tx = await run_behind_a_slow_first(stack, pool, unique, recording(), later, expected_effects=3,
                                       consumer_max_attempts=2, consumer_retry_backoff_ms=10)
    assert sorted(tx) == [1, 2, 4]
    dead = await read_topic(stack.settings(), dlq_topic(f"runs.{unique}"), until_count=1, timeout=10)
    assert "cannot handle this one" in dict(dead[0].headers)["dlq_error"].decode()
    assert [r["attempts"] for r in await pool.fetch("SELECT attempts FROM dead_letters")] == [2]
    assert await pool.fetchval("SELECT count(*) FROM processed_events") == 3
