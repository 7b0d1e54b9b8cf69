"""Outbox relay against the real broker: ordered per key, woken by NOTIFY, crash-safe."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

from shared.envelope import EventEnvelope
from shared.eventstore import EventStore
from shared.kafka import ensure_topics, make_producer
from shared.outbox import OutboxRelay, outbox_status
from tests.helpers.events import Exploded, Ticked
from tests.helpers.kafka import read_topic


async def fill(pool, store, streams: int, events_each: int) -> set:
    ids = set()
    for v in range(events_each):
        async with pool.acquire() as conn, conn.transaction():
            for s in range(streams):
                stored = await store.append(conn, aggregate_type="Test", aggregate_id=f"R{s:03d}",
                                            expected_version=v, events=[Ticked(n=v)])
                ids.update(str(e.event_id) for e in stored)
    return ids


async def drained(pool, within: float = 5.0) -> dict:
    """The outbox status once nothing is left unpublished: the relay deletes what it published
    within OUTBOX_FLUSH_MS (100 ms) of the last publish."""
    deadline = time.monotonic() + within
    while (status := await outbox_status(pool))["unpublished"]:
        assert time.monotonic() < deadline, f"the outbox still holds {status['unpublished']} rows"
        await asyncio.sleep(0.02)
    return status


def first_occurrence_order(records) -> dict[str, list[int]]:
    """Per key, the sequences in the order they first appeared (repeats allowed)."""
    seen, order = set(), defaultdict(list)
    for r in records:
        env = EventEnvelope.from_json(r.value)
        if env.event_id not in seen:
            seen.add(env.event_id)
            order[r.key.decode()].append(env.sequence)
    return order


async def test_relay_wakes_on_notify_and_keeps_per_key_order(stack, pool, schema, unique):
    topic = f"relay.{unique}"
    # A 60 s poll interval: only NOTIFY can make the relay publish promptly.
    settings = stack.settings(outbox_poll_interval_s=60, outbox_batch_size=50)
    await ensure_topics(settings, [topic])
    store = EventStore(schema, topic)
    producer = make_producer(settings)
    await producer.start()
    relay = OutboxRelay(settings, schema, producer)
    task = asyncio.create_task(relay.run())
    try:
        while not relay.is_leader:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the relay is now idle, waiting on LISTEN
        started = time.monotonic()
        ids = await fill(pool, store, streams=10, events_each=12)
        records = await read_topic(settings, topic, until_count=len(ids), timeout=10)
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"relay took {elapsed:.1f}s: it slept instead of waking on NOTIFY"
        assert {EventEnvelope.from_json(r.value).event_id.__str__() for r in records} == ids
        for key, sequences in first_occurrence_order(records).items():
            assert sequences == list(range(1, 13)), key
        headers = dict(records[0].headers)
        assert {"event_id", "event_type", "event_version", "correlation_id", "traceparent"} <= set(headers)
        await drained(pool, within=1.0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()


async def test_relay_killed_mid_batch_and_restarted_loses_nothing(stack, pool, schema, unique):
    topic = f"relay.{unique}"
    settings = stack.settings()
    await ensure_topics(settings, [topic])
    store = EventStore(schema, topic)
    ids = await fill(pool, store, streams=40, events_each=100)  # 4,000 events
    env = {**os.environ, "DATABASE_URL": stack.database_url,
           "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers, "OUTBOX_BATCH_SIZE": "100"}
    cmd = [sys.executable, "-m", "tests.helpers.run_relay", schema]

    relay = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 30
        while (await outbox_status(pool))["unpublished"] > 3000:
            assert time.monotonic() < deadline, "relay never started publishing"
            await asyncio.sleep(0.005)
    finally:
        relay.send_signal(signal.SIGKILL)
        relay.wait()
    left = (await outbox_status(pool))["unpublished"]
    assert 0 < left < len(ids), "the kill must land while work remains"

    relay = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.monotonic() + 60
        while (await outbox_status(pool))["unpublished"] > 0:
            assert time.monotonic() < deadline, "restarted relay did not drain the outbox"
            await asyncio.sleep(0.05)
    finally:
        relay.terminate()
        relay.wait()

    published = await read_topic(settings, topic, until_count=len(ids), timeout=30, settle=0.5)
    published_ids = {str(EventEnvelope.from_json(r.value).event_id) for r in published}
    assert published_ids == ids  # nothing lost; a repeat publish is allowed
    for key, sequences in first_occurrence_order(published).items():
        assert sequences == list(range(1, 101)), key


async def test_a_row_the_broker_refuses_is_parked_and_later_rows_flow(stack, pool, schema, unique):
    """One event too large for the broker (written past the store's own bound, as a bug or
    an older version might have) must not hold back the events behind it."""
    import pytest

    from shared.aggregate import DomainError
    from shared.eventstore import MAX_EVENT_BYTES

    topic = f"relay.{unique}"
    settings = stack.settings(outbox_poll_interval_s=0.2)
    await ensure_topics(settings, [topic])
    store = EventStore(schema, topic)
    before = await fill(pool, store, streams=1, events_each=1)
    await pool.execute("INSERT INTO outbox (topic, key, value, headers) VALUES ($1, 'R000', $2, '[]')",
                       topic, b"x" * (2 * 1024 * 1024))
    async with pool.acquire() as conn, conn.transaction():
        after = await store.append(conn, aggregate_type="Test", aggregate_id="R001", expected_version=0,
                                   events=[Ticked(n=1)])
    producer = make_producer(settings)
    await producer.start()
    relay = OutboxRelay(settings, schema, producer)
    task = asyncio.create_task(relay.run())
    try:
        records = await read_topic(settings, topic, until_count=2, timeout=20)
        assert {str(EventEnvelope.from_json(r.value).event_id) for r in records} == before | {
            str(after[0].event_id)}
        deadline = time.monotonic() + 10
        while (status := await outbox_status(pool))["parked"] != 1 or status["unpublished"]:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.05)
        [parked] = status["parked_rows"]
        assert parked["bytes"] == 2 * 1024 * 1024 and "TooLarge" in parked["error"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
    # The store itself refuses an event that large, before it is ever stored.
    with pytest.raises(DomainError) as refused:
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, aggregate_type="Test", aggregate_id="R002", expected_version=0,
                               events=[Exploded(reason="x" * MAX_EVENT_BYTES)])
    assert refused.value.code == "event_too_large" and refused.value.status == 413


async def test_a_parked_row_holds_back_its_keys_later_rows_until_it_is_released(stack, pool, schema, unique):
    """Issue #23, 7: a consumer must never see an order's later events without an earlier
    one. The row refused for good holds back its key's later rows, those in its own batch
    and those appended after it was parked, while other keys flow; retrying parks it again
    (still refused), discarding it lets the held rows through, in order."""
    from shared.outbox import release_parked

    topic = f"relay.{unique}"
    settings = stack.settings(outbox_poll_interval_s=0.2)
    await ensure_topics(settings, [topic])
    store = EventStore(schema, topic)

    async def tick(stream: str, version: int) -> str:
        async with pool.acquire() as conn, conn.transaction():
            [stored] = await store.append(conn, aggregate_type="Test", aggregate_id=stream,
                                          expected_version=version, events=[Ticked(n=version)])
        return str(stored.event_id)

    first = await tick("R000", 0)
    parked_id = await pool.fetchval("INSERT INTO outbox (topic, key, value, headers) VALUES ($1, 'R000', $2, '[]')"
                                    " RETURNING id", topic, b"x" * (2 * 1024 * 1024))
    same_batch = await tick("R000", 1)  # in the relay's first batch, behind the refused row
    other = await tick("R001", 0)
    producer = make_producer(settings)
    await producer.start()
    relay = OutboxRelay(settings, schema, producer)
    task = asyncio.create_task(relay.run())

    async def published(count: int, settle: float) -> dict[str, list[str]]:
        """Per key, the event ids on the topic in their order."""
        by_key = defaultdict(list)
        for r in await read_topic(settings, topic, until_count=count, timeout=20, settle=settle):
            by_key[r.key.decode()].append(str(EventEnvelope.from_json(r.value).event_id))
        return dict(by_key)

    try:
        assert await published(2, settle=0.5) == {"R000": [first], "R001": [other]}
        after_parking = await tick("R000", 2)
        flowing = await tick("R001", 1)
        assert await published(3, settle=1.0) == {"R000": [first], "R001": [other, flowing]}
        status = await outbox_status(pool)
        assert (status["parked"], status["held"]) == (1, 2), status

        assert await release_parked(pool, schema, discard=False) == [parked_id]  # still too large: parked again
        deadline = time.monotonic() + 10
        while (status := await outbox_status(pool))["parked"] != 1:
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.05)
        assert status["held"] == 2
        assert await published(3, settle=0.5) == {"R000": [first], "R001": [other, flowing]}

        assert await release_parked(pool, schema, discard=True, ids=[parked_id]) == [parked_id]
        assert await published(5, settle=0.5) == {"R000": [first, same_batch, after_parking],
                                                  "R001": [other, flowing]}
        assert (await outbox_status(pool))["unpublished"] == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
