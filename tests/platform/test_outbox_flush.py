"""The outbox relay reads each row once and deletes what it published in batches (issue #26,
item 5): one statement per round while appends keep coming, no row lost to a late commit or a
crash before the delete, and the backlog still what is not yet published."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import pytest

import shared.outbox
from shared import wakeup
from shared.envelope import EventEnvelope
from shared.eventstore import EventStore
from shared.health import _database_figures
from shared.kafka import ensure_topics, make_producer
from shared.outbox import OutboxRelay, outbox_status
from tests.helpers.events import Ticked
from tests.helpers.kafka import read_topic
from tests.platform.test_outbox_relay import drained, fill, first_occurrence_order


class Relay:
    """An OutboxRelay of this process, running, and the statements its connections send."""

    def __init__(self, settings, schema: str, producer) -> None:
        self.relay = OutboxRelay(settings, schema, producer)
        self.statements: list[str] = []
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> OutboxRelay:
        self.task = asyncio.create_task(self.relay.run())
        deadline = time.monotonic() + 10
        while not self.relay.is_leader:
            assert time.monotonic() < deadline, "the relay did not lead"
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # listening, its first read made: idle
        return self.relay

    async def __aexit__(self, *_) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
def counted(monkeypatch):
    """Relays started after this record every statement of their connections."""
    relays: list[Relay] = []
    connect = shared.outbox.db.connect

    async def logged_connect(*args, **kwargs):
        conn = await connect(*args, **kwargs)
        for relay in relays:
            conn.add_query_logger(lambda q, into=relay.statements: into.append(q.query))
        return conn

    monkeypatch.setattr(shared.outbox.db, "connect", logged_connect)

    def make(settings, schema: str, producer) -> Relay:
        relay = Relay(settings, schema, producer)
        relays.append(relay)
        return relay
    return make


@pytest.fixture
async def producer(stack):
    producer = make_producer(stack.settings())
    await producer.start()
    yield producer
    await producer.stop()


async def tick(pool, store: EventStore, stream: str, version: int) -> str:
    async with pool.acquire() as conn:
        [stored] = await store.append(conn, aggregate_type="Test", aggregate_id=stream, expected_version=version,
                                      events=[Ticked(n=version)])
    return str(stored.event_id)


async def until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


async def test_one_statement_per_round_while_appends_keep_coming(stack, pool, schema, unique, producer, counted):
    topic = f"flush.{unique}"
    settings = stack.settings(outbox_poll_interval_s=60, outbox_flush_ms=3000)
    await ensure_topics(settings, [topic])
    store = EventStore(schema, topic)
    relay = counted(settings, schema, producer)
    async with relay as running:
        before = len(relay.statements)
        for n in range(20):  # each append its own round: published before the next comes
            await tick(pool, store, f"S{n}", 0)

            async def published(n=n) -> bool:
                return running.published == n + 1
            await until(published, 5, f"append {n} not published")
        rounds = relay.statements[before:]
        assert rounds == [shared.outbox.READ_NEXT] * 20, rounds  # no delete, no NOTIFY of their own
        assert await pool.fetchval("SELECT count(*) FROM outbox") == 20  # published, not yet deleted

        await drained(pool, within=6)  # idle past OUTBOX_FLUSH_MS: deleted, in one more statement
        assert relay.statements[before + 20:] == [shared.outbox.FLUSH]
    assert len(await read_topic(settings, topic, until_count=20)) == 20


async def test_rows_committed_out_of_id_order_are_all_published(stack, pool, schema, unique, producer, counted):
    """A row's id is taken at insert, visible at commit: a lower id can become visible after a
    higher one was published (a redrive or an operator's insert does not take the events
    table's lock). It is published all the same, while the higher one waits to be deleted."""
    topic = f"flush.{unique}"
    settings = stack.settings(outbox_poll_interval_s=60, outbox_flush_ms=60_000)
    await ensure_topics(settings, [topic])
    insert = "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, '[]') RETURNING id"
    async with counted(settings, schema, producer), pool.acquire() as late:
        async with late.transaction():
            low = await late.fetchval(insert, topic, "late", b"low")
            high = await pool.fetchval(insert, topic, "early", b"high")
            await pool.execute("SELECT pg_notify($1, '')", f"{schema}_outbox")
            [first] = await read_topic(settings, topic, until_count=1, settle=0.3)
            assert (first.value, low < high) == (b"high", True)
            await late.execute("SELECT pg_notify($1, '')", f"{schema}_outbox")  # sent at its commit
        records = await read_topic(settings, topic, until_count=2, timeout=5, settle=0.3)
    assert [r.value for r in records if r.key == b"late"] == [b"low"]
    assert sorted(r.value for r in records) == [b"high", b"low"]


async def test_a_relay_killed_before_its_batched_delete_leaves_rows_the_next_leader_publishes(
        stack, pool, schema, unique, producer):
    topic = f"flush.{unique}"
    settings = stack.settings(outbox_poll_interval_s=0.2)
    await ensure_topics(settings, [topic])
    ids = await fill(pool, EventStore(schema, topic), streams=10, events_each=10)
    # A relay process that never deletes on its own (nor, killed, on its way out).
    env = {**os.environ, "DATABASE_URL": stack.database_url, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
           "OUTBOX_BATCH_SIZE": "30", "OUTBOX_FLUSH_MS": "600000", "OUTBOX_FLUSH_ROWS": "1000000"}
    process = subprocess.Popen([sys.executable, "-m", "tests.helpers.run_relay", schema], env=env)
    try:
        await read_topic(settings, topic, until_count=len(ids), timeout=30)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert (await outbox_status(pool))["unpublished"] == len(ids), "all published, none deleted yet"

    async with Relay(settings, schema, producer):
        await drained(pool, within=10)
    records = await read_topic(settings, topic, until_count=2 * len(ids), timeout=30, settle=0.5)
    assert {str(EventEnvelope.from_json(r.value).event_id) for r in records} == ids  # none lost
    for key, sequences in first_occurrence_order(records).items():
        assert sequences == list(range(1, 11)), key
    passes = defaultdict(list)  # each key's events, repeats included, in the order published
    for r in records:
        passes[r.key.decode()].append(EventEnvelope.from_json(r.value).sequence)
    assert all(seen == list(range(1, 11)) * 2 for seen in passes.values()), passes


async def test_the_backlog_is_what_is_not_yet_published(stack, pool, schema, unique, producer):
    """`outbox status` and the backlog gauges count the rows in the outbox: those not yet
    published, and for OUTBOX_FLUSH_MS those just published. Pausing deletes these at once."""
    topic = f"flush.{unique}"
    settings = stack.settings(outbox_poll_interval_s=60)  # OUTBOX_FLUSH_MS: 100
    await ensure_topics(settings, [topic])
    store = EventStore(schema, topic)
    async with Relay(settings, schema, producer) as relay:
        await relay.pause()
        for n in range(5):
            await tick(pool, store, f"S{n}", 0)
        status, (figures, _, _) = await outbox_status(pool), await _database_figures(pool)
        assert (status["unpublished"], figures["unpublished"]) == (5, 5)
        assert status["oldest_age_s"] > 0 and figures["oldest_age_s"] > 0
        relay.resume()
        await read_topic(settings, topic, until_count=5, timeout=5)
        started = time.monotonic()
        await drained(pool, within=2)
        assert time.monotonic() - started < 1.0
        assert (await _database_figures(pool))[0] == {"unpublished": 0, "oldest_age_s": 0.0, "parked": 0}

    slow = stack.settings(outbox_poll_interval_s=60, outbox_flush_ms=60_000)
    async with Relay(slow, schema, producer) as relay:
        await tick(pool, store, "S0", 1)
        await read_topic(settings, topic, until_count=6, timeout=5)
        assert (await outbox_status(pool))["unpublished"] == 1  # published, its delete not yet due
        await relay.pause()
        assert (await outbox_status(pool))["unpublished"] == 0
        relay.resume()


async def test_consumers_of_other_processes_hear_of_a_publish_within_the_flush(stack, pool, schema, unique,
                                                                                 producer):
    """This process's consumers are woken at once, in memory, and pass over the NOTIFY their
    own relay sends later; another process's hear it once the relay has been idle for
    OUTBOX_FLUSH_MS."""
    topic = f"flush.{unique}"
    settings = stack.settings(outbox_poll_interval_s=60, outbox_flush_ms=300)
    await ensure_topics(settings, [topic])
    store = EventStore(schema, topic)
    woken = await wakeup.listener.subscribe(stack.database_url, [topic])
    try:
        async with Relay(settings, schema, producer):
            woken.clear()
            await tick(pool, store, "here", 0)
            await asyncio.wait_for(woken.wait(), 2)
            woken.clear()
            await drained(pool, within=2)  # the flush, and its NOTIFY, went
            await asyncio.sleep(0.2)
            assert not woken.is_set(), "woken again by its own relay's NOTIFY"

        env = {**os.environ, "DATABASE_URL": stack.database_url, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers,
               "OUTBOX_POLL_INTERVAL_S": "60", "OUTBOX_FLUSH_MS": "300"}
        process = subprocess.Popen([sys.executable, "-m", "tests.helpers.run_relay", schema], env=env)
        try:
            await until(lambda: pool.fetchval("SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory'"
                                              " AND objid = $1", shared.outbox.relay_lock_key(schema) & 0xFFFFFFFF),
                        15, "the relay process did not lead")
            woken.clear()
            await tick(pool, store, "there", 0)
            await asyncio.wait_for(woken.wait(), 5)
        finally:
            process.terminate()
            process.wait()
    finally:
        wakeup.listener.unsubscribe(woken)


async def test_a_read_that_finds_nothing_still_notifies_what_was_published(pool, schema):
    """The NOTIFY rides on the next read, which may find no row (woken by an append it had
    already read): a SELECT in a WITH runs only as far as it is read, so it must still run."""
    heard: list[str] = []

    def hear(*args) -> None:
        heard.append(args[-1])
    async with pool.acquire() as listening:
        await listening.add_listener(wakeup.CHANNEL, hear)
        rows = await pool.fetch(shared.outbox.READ_NEXT, 10, [], wakeup.CHANNEL, ["a.events", "b.events"], [])
        assert [dict(r) for r in rows] == [dict.fromkeys(("id", "topic", "key", "value", "headers"))]
        await until(lambda: asyncio.sleep(0.01, len(heard) == 2), 2, f"heard only {heard}")
        assert sorted(heard) == ["a.events", "b.events"]
        await listening.remove_listener(wakeup.CHANNEL, hear)


@pytest.mark.parametrize("lingering", ["by its settings", "told to (every service in one process)"])
async def test_appends_that_come_while_it_lingers_go_out_in_one_round(stack, pool, schema, unique, producer, counted,
                                                                      lingering):
    """OUTBOX_LINGER_MS: woken from idle, the relay waits before it reads, so the appends of
    that moment are one round (one statement), not one each. With every service in one process
    (tillstream/host.py) it is told how long instead (ONE_PROCESS_OUTBOX_LINGER_MS)."""
    topic = f"flush.{unique}"
    told = lingering.startswith("told")
    settings = stack.settings(outbox_poll_interval_s=60, outbox_flush_ms=60_000, outbox_linger_ms=0 if told else 1000)
    await ensure_topics(settings, [topic])
    store = EventStore(schema, topic)
    relay = counted(settings, schema, producer)
    async with relay as running:
        if told:
            running.linger(1000)
        before = len(relay.statements)
        for n in range(10):  # spaced out: without the linger, each would be a round of its own
            await tick(pool, store, f"L{n}", 0)
            await asyncio.sleep(0.02)

        async def published() -> bool:
            return running.published == 10
        await until(published, 5, "not all published")
        assert relay.statements[before:] == [shared.outbox.READ_NEXT], relay.statements[before:]
    assert len(await read_topic(settings, topic, until_count=10)) == 10
