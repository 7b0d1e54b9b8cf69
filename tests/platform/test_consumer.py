"""Idempotent consumer and dead-letter queue, through the real broker and PostgreSQL."""
from __future__ import annotations

import asyncio
import time

import asyncpg

from shared.kafka import dlq_topic, ensure_topics, make_producer
from tests.helpers.events import Exploded, Ticked
from tests.helpers.kafka import (
    consuming,
    message,
    publish,
    publish_as_one_batch,
    read_topic,
    until_waiting_for_the_lock,
)


async def make_effects_table(pool):
    await pool.execute("CREATE TABLE effects (n int NOT NULL)")


async def add_effect(conn, envelope):
    if envelope.type == Exploded.event_type:
        raise RuntimeError(f"cannot handle: {envelope.payload['reason']}")
    await conn.execute("INSERT INTO effects (n) VALUES ($1)", envelope.payload["n"])


async def run_consumer(settings, pool, topic, group, until, event_types=None):
    async with consuming(settings, pool, topic, group, add_effect, event_types) as task:
        deadline = time.monotonic() + 45
        while not await until():
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "consumer did not get there in time"
            await asyncio.sleep(0.05)


async def test_duplicate_delivery_is_applied_once(stack, pool, unique):
    settings = stack.settings()
    topic = f"dup.{unique}"
    await make_effects_table(pool)
    env, msg = message(Ticked(n=5))
    _, other = message(Ticked(n=7), sequence=2)
    await publish(settings, topic, [msg, msg, msg, other])  # delivered three times
    processed = lambda: pool.fetchval("SELECT count(*) = 2 FROM processed_events")  # noqa: E731
    await run_consumer(settings, pool, topic, f"g-{unique}", processed)
    assert [r["n"] for r in await pool.fetch("SELECT n FROM effects ORDER BY n")] == [5, 7]
    # A second group sees the topic (now holding n=5 four times) from the start.
    await publish(settings, topic, [msg])
    await run_consumer(settings, pool, topic, f"g2-{unique}",
                       lambda: pool.fetchval("SELECT count(*) = 2 FROM processed_events WHERE consumer = $1",
                                             f"g2-{unique}"))
    rows = await pool.fetch("SELECT n FROM effects ORDER BY n")
    assert [r["n"] for r in rows] == [5, 5, 7, 7]  # once per consumer group, never per delivery
    assert await pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id = $1", env.event_id) == 2


async def test_a_background_subscription_fetches_at_its_own_pace_and_still_handles_everything(stack, pool, unique):
    from services.cart.consumers import subscriptions as cart_subscriptions
    from services.order.consumers import subscriptions as order_subscriptions
    from shared.kafka import make_consumer

    settings = stack.settings(kafka_fetch_max_wait_ms=10, kafka_background_fetch_max_wait_ms=300)
    # Idle polling costs CPU every fetch wait: a consumer no request waits on polls less
    # (the cart's promotion uses); one a completion may wait on (the saga's answers) does not.
    assert {s.name: s.background for s in cart_subscriptions} == {"orders": True}
    assert {s.name: s.background for s in order_subscriptions} == {"view": False, "saga": False}
    assert make_consumer(settings, "t", group_id="g", background=True)._fetch_max_wait_ms == 300
    assert make_consumer(settings, "t", group_id="g")._fetch_max_wait_ms == 10
    topic = f"background.{unique}"
    await make_effects_table(pool)
    await publish(settings, topic, [message(Ticked(n=n), sequence=n)[1] for n in (1, 2, 3)])
    async with consuming(settings, pool, topic, f"g-{unique}", add_effect, background=True) as task:
        deadline = time.monotonic() + 45
        while await pool.fetchval("SELECT count(*) FROM effects") < 3:
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the background consumer did not catch up"
            await asyncio.sleep(0.05)
    assert [r["n"] for r in await pool.fetch("SELECT n FROM effects ORDER BY n")] == [1, 2, 3]


async def test_a_subscription_passes_over_the_events_it_does_not_handle(stack, pool, unique):
    settings = stack.settings()
    topic = f"filter.{unique}"
    await make_effects_table(pool)
    _, exploded = message(Exploded(reason="not for this consumer"), sequence=1)
    ticked, tick = message(Ticked(n=3), sequence=2)
    await publish(settings, topic, [exploded, tick])
    processed = lambda: pool.fetchval("SELECT count(*) >= 1 FROM processed_events")  # noqa: E731
    await run_consumer(settings, pool, topic, f"g-{unique}", processed, event_types=(Ticked,))
    # The Exploded event would have failed the handler (and been dead-lettered): it was
    # never handed over, and left no idempotency record; the Ticked one was applied once.
    assert [r["n"] for r in await pool.fetch("SELECT n FROM effects")] == [3]
    assert [r["event_id"] for r in await pool.fetch("SELECT event_id FROM processed_events")] == [ticked.event_id]
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_poison_messages_go_to_the_dlq_and_later_messages_still_flow(stack, pool, unique):
    settings = stack.settings(consumer_max_attempts=3, consumer_retry_backoff_ms=10)
    topic = f"poison.{unique}"
    await ensure_topics(settings, [topic])
    await make_effects_table(pool)
    _, first = message(Ticked(n=1), sequence=1)
    _, failing = message(Exploded(reason="boom"), sequence=2)
    garbage = (b"K1", b"{not json", [])
    later = [message(Ticked(n=n), sequence=n)[1] for n in range(3, 8)]
    # Same key: one partition, so the later messages queue behind the poison ones.
    await publish(settings, topic, [first, failing, garbage, *later])
    done = lambda: pool.fetchval("SELECT count(*) = 6 FROM effects")  # noqa: E731
    await run_consumer(settings, pool, topic, f"g-{unique}", done)

    assert [r["n"] for r in await pool.fetch("SELECT n FROM effects ORDER BY n")] == [1, 3, 4, 5, 6, 7]
    dead = await read_topic(settings, dlq_topic(topic), until_count=2, timeout=10)
    assert len(dead) == 2
    errors = [dict(r.headers)["dlq_error"].decode() for r in dead]
    assert "RuntimeError: cannot handle: boom" in errors[0]
    assert "undecodable message" in errors[1]
    assert dead[1].value == b"{not json"
    assert dict(dead[0].headers)["dlq_original_topic"].decode() == topic
    rows = await pool.fetch('SELECT error, attempts, "offset" FROM dead_letters ORDER BY id')
    assert [r["attempts"] for r in rows] == [3, 1]  # retried, then given up; garbage at once


def slow_for_n1(held: int):
    """A handler recording (order, n); for n = 1 it first waits until the test lets go of
    the advisory lock `held`."""
    async def handle(conn, envelope):
        if envelope.payload["n"] == 1:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", held)
        await conn.execute("INSERT INTO effects (key, n) VALUES ($1, $2)",
                           envelope.aggregate_id, envelope.payload["n"])
    return handle


async def handled_while_order_a_waits(stack, pool, unique, consumer_concurrency: int) -> tuple[list, list]:
    """Orders A (two messages) and B (one) in one partition; A's first waits on a lock the
    test holds. Returns what was handled while A waited, and everything in the end."""
    settings = stack.settings(kafka_topic_partitions=1, consumer_concurrency=consumer_concurrency)
    topic = f"keys.{unique}"
    await pool.execute("CREATE TABLE effects (id serial, key text NOT NULL, n int NOT NULL)")
    held = 4242


    # One partition, one record batch: A's two messages and B's one reach the consumer together.
    await publish_as_one_batch(settings, topic, [message(Ticked(n=1), stream="A", sequence=1)[1],
                                                 message(Ticked(n=2), stream="B", sequence=1)[1],
                                                 message(Ticked(n=3), stream="A", sequence=2)[1]])
    blocker = await asyncpg.connect(stack.database_url)
    await blocker.execute("SELECT pg_advisory_lock($1)", held)
    try:
        async with consuming(settings, pool, topic, f"g-{unique}", slow_for_n1(held)) as task:
            deadline = time.monotonic() + 45
            await until_waiting_for_the_lock(blocker, held, task, deadline)
            await asyncio.sleep(0.5)
            meanwhile = [(r["key"], r["n"]) for r in await pool.fetch("SELECT key, n FROM effects ORDER BY id")]
            await blocker.execute("SELECT pg_advisory_unlock($1)", held)
            while await pool.fetchval("SELECT count(*) FROM effects") < 3:
                assert time.monotonic() < deadline, "not every message was handled after the lock was released"
                await asyncio.sleep(0.05)
        finally_handled = [(r["key"], r["n"]) for r in await pool.fetch("SELECT key, n FROM effects ORDER BY id")]
        return meanwhile, finally_handled
    finally:
        await blocker.close()


async def test_one_slow_order_does_not_hold_back_other_orders_in_its_partition(stack, pool, unique):
    meanwhile, handled = await handled_while_order_a_waits(stack, pool, unique, consumer_concurrency=6)
    # B was handled while A's first message waited; A's second waited behind its first.
    assert meanwhile == [("B", 2)]
    assert handled == [("B", 2), ("A", 1), ("A", 3)]


async def test_consumer_concurrency_bounds_the_orders_handled_at_once(stack, pool, unique):
    meanwhile, handled = await handled_while_order_a_waits(stack, pool, unique, consumer_concurrency=1)
    assert meanwhile == []  # the one slot is A's: B waits for it
    assert sorted(handled) == [("A", 1), ("A", 3), ("B", 2)]
    assert handled.index(("A", 1)) < handled.index(("A", 3))


async def test_a_slow_order_holds_back_neither_the_next_fetch_nor_more_than_its_own_offset(stack, pool, unique):
    """Order A's first message waits on a lock; B's message and A's second, published only
    then, come in a later fetch: B is handled meanwhile, A's second only after A's first,
    and the committed offset stays at A's first (a crash would redeliver from there)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    settings = stack.settings(kafka_topic_partitions=1, kafka_commit_interval_ms=50)
    topic, group, held = f"later.{unique}", f"g-{unique}", 4343
    await pool.execute("CREATE TABLE effects (id serial, key text NOT NULL, n int NOT NULL)")

    async def handled() -> list:
        return [(r["key"], r["n"]) for r in await pool.fetch("SELECT key, n FROM effects ORDER BY id")]

    await publish(settings, topic, [message(Ticked(n=1), stream="A", sequence=1)[1]])
    blocker = await asyncpg.connect(stack.database_url)
    await blocker.execute("SELECT pg_advisory_lock($1)", held)
    # Reads the group's committed offset without joining the group.
    probe = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group,
                             enable_auto_commit=False)
    await probe.start()

    async def committed() -> int:
        return await probe.committed(TopicPartition(topic, 0)) or 0

    try:
        async with consuming(settings, pool, topic, group, slow_for_n1(held)) as task:
            deadline = time.monotonic() + 45
            await until_waiting_for_the_lock(blocker, held, task, deadline)
            await publish(settings, topic, [message(Ticked(n=2), stream="B", sequence=1)[1],
                                            message(Ticked(n=3), stream="A", sequence=2)[1]])
            while await handled() != [("B", 2)]:
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, f"B was not handled while A waited: {await handled()}"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # a few commit intervals
            assert await committed() == 0
            assert await handled() == [("B", 2)]  # A's second still waits for its first
            await blocker.execute("SELECT pg_advisory_unlock($1)", held)
            while len(await handled()) < 3:
                assert time.monotonic() < deadline, "not every message was handled after the lock was released"
                await asyncio.sleep(0.05)
            assert await handled() == [("B", 2), ("A", 1), ("A", 3)]
            while await committed() != 3:
                assert time.monotonic() < deadline, "the offset was not committed past A once it was handled"
                await asyncio.sleep(0.05)
    finally:
        await probe.stop()
        await blocker.close()


async def test_a_database_outage_is_waited_out_never_dead_lettered(stack, pool, unique):
    """The database dropping the handler's connection five times running (more than
    CONSUMER_MAX_ATTEMPTS) says nothing about the message: it is handled once it is back."""
    settings = stack.settings(consumer_max_attempts=2, consumer_retry_backoff_ms=10)
    topic = f"outage.{unique}"
    await ensure_topics(settings, [topic])
    await make_effects_table(pool)
    dropped = []

    async def drops_its_connection(conn, envelope):
        if len(dropped) < 5:
            dropped.append(envelope.event_id)
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        await add_effect(conn, envelope)

    await publish(settings, topic, [message(Ticked(n=1))[1]])
    async with consuming(settings, pool, topic, f"g-{unique}", drops_its_connection) as task:
        deadline = time.monotonic() + 45
        while not await pool.fetchval("SELECT count(*) = 1 FROM effects"):
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "the consumer did not get past the outage"
            await asyncio.sleep(0.05)
    assert len(dropped) == 5
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_an_idle_consumer_stops_fetching_until_a_relay_publishes_to_its_topic(stack, pool, schema, unique):
    """The embedded broker does not wake a waiting fetch, so consumers used to poll it every
    10 ms for ever. Idle, a consumer now fetches nothing until the outbox relay NOTIFYs that
    it published to one of its topics (a backstop of 10 minutes here: only the notification
    can wake it in time)."""
    from shared.consumer import EventConsumer
    from shared.eventstore import EventStore
    from shared.outbox import OutboxRelay

    settings = stack.settings(consumer_idle_after_ms=50, consumer_wake_backstop_ms=600_000,
                              outbox_poll_interval_s=60)
    topic = f"wake.{unique}"
    await ensure_topics(settings, [topic])
    await make_effects_table(pool)
    producer = make_producer(settings)
    await producer.start()
    consumer = EventConsumer(settings=settings, pool=pool, producer=producer, group_id=f"g-{unique}",
                             topics=[topic], handler=add_effect, wake_on_publish=True)
    relay = OutboxRelay(settings, schema, producer)
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(relay.run())]
    effects = lambda: pool.fetch("SELECT n FROM effects ORDER BY n")  # noqa: E731
    try:
        await asyncio.wait_for(consumer.assigned.wait(), 45)
        await asyncio.sleep(1)  # long past CONSUMER_IDLE_AFTER_MS: paused
        # Published behind the relays' back: nobody says so, the idle consumer does not look.
        await publish(settings, topic, [message(Ticked(n=1), stream="direct")[1]])
        await asyncio.sleep(1.5)
        assert await effects() == []
        # Appended to a stream: the relay publishes it and wakes the consumer, which fetches
        # from its position, so it finds the earlier message too.
        async with pool.acquire() as conn, conn.transaction():
            await EventStore(schema, topic).append(conn, aggregate_type="Test", aggregate_id="stored",
                                                   expected_version=0, events=[Ticked(n=2)])
        deadline = time.monotonic() + 30
        while len(await effects()) < 2:
            assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            assert time.monotonic() < deadline, "the relay's notification did not wake the consumer"
            await asyncio.sleep(0.05)
        assert [r["n"] for r in await effects()] == [1, 2]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()


async def test_after_the_backstop_an_idle_consumer_looks_once_and_finds_what_nobody_announced(stack, pool, schema,
                                                                                              unique):
    """A backstop wake is one short look (a getmany of the commit interval was ~20 fetches on
    the embedded broker, most of the system's CPU at rest): it still finds a message nobody
    announced, and goes back to sleep."""
    from shared.consumer import EventConsumer

    settings = stack.settings(consumer_idle_after_ms=50, consumer_wake_backstop_ms=300)
    topic = f"probe.{unique}"
    await ensure_topics(settings, [topic])
    await make_effects_table(pool)
    producer = make_producer(settings)
    await producer.start()
    consumer = EventConsumer(settings=settings, pool=pool, producer=producer, group_id=f"g-{unique}",
                             topics=[topic], handler=add_effect, wake_on_publish=True)
    task = asyncio.create_task(consumer.run())
    effects = lambda: pool.fetch("SELECT n FROM effects ORDER BY n")  # noqa: E731
    try:
        await asyncio.wait_for(consumer.assigned.wait(), 45)
        await asyncio.sleep(1)  # idle: probing once per backstop
        for n in (1, 2):
            await publish(settings, topic, [message(Ticked(n=n), stream=f"direct-{n}")[1]])
            deadline = time.monotonic() + 15
            while len(await effects()) < n:
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, "a backstop look did not find the message"
                await asyncio.sleep(0.05)
            await asyncio.sleep(1)  # back to sleep between the two
        assert [r["n"] for r in await effects()] == [1, 2]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()


async def test_a_paced_consumer_fetches_what_gathered_in_fewer_fetches_and_handles_everything(stack, pool, unique):
    """A backstop consumer (every service in one process, tillstream/host.py) waits its pace
    after each batch: messages published one by one reach it in a few batches, all of them."""
    from shared.consumer import EventConsumer

    settings = stack.settings(kafka_fetch_max_wait_ms=10)
    topic = f"paced.{unique}"
    await make_effects_table(pool)
    await ensure_topics(settings, [topic])
    producer = make_producer(settings)
    await producer.start()
    batches: dict[str, list[int]] = {}

    async def run(group: str, pace_ms: int, first: int, draining: bool = False) -> None:
        consumer = EventConsumer(settings=settings, pool=pool, producer=producer, group_id=group, topics=[topic],
                                 handler=add_effect)
        consumer.pace(pace_ms)
        consumer.drain(draining)
        task = asyncio.create_task(consumer.run())
        try:
            await consumer.assigned.wait()
            fetch = consumer._live.getmany  # counts the fetches that brought messages

            async def counted(*args, **kwargs):
                got = await fetch(*args, **kwargs)
                if got:
                    batches.setdefault(group, []).append(sum(map(len, got.values())))
                return got

            consumer._live.getmany = counted
            for n in range(first, first + 20):  # one message every 20 ms, for 0.4 s
                _, (key, value, headers) = message(Ticked(n=n), stream=f"K{n}")
                await producer.send_and_wait(topic, value=value, key=key, headers=headers)
                await asyncio.sleep(0.02)
            deadline = time.monotonic() + 45
            while await pool.fetchval("SELECT count(*) FROM effects WHERE n >= $1 AND n < $2", first, first + 20) < 20:
                assert not task.done(), task.exception()
                assert time.monotonic() < deadline, "the consumer did not catch up"
                await asyncio.sleep(0.05)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        await run(f"paced-{unique}", 300, 100)
        await run(f"unpaced-{unique}", 0, 200)
        # Draining (shared/recycle.py empties the broker's topics once it has everything): the
        # relays stand still meanwhile, so it keeps no pace.
        await run(f"draining-{unique}", 300, 300, draining=True)
    finally:
        await producer.stop()
    paced, unpaced = batches[f"paced-{unique}"], batches[f"unpaced-{unique}"]
    draining = batches[f"draining-{unique}"]
    # (A fetch already under way when counting began is not counted: at most one.)
    assert sum(paced) >= 19 and sum(unpaced) >= 19 and sum(draining) >= 19, (paced, unpaced, draining)
    # 0.4 s of messages at a 300 ms pace: a handful of fetches; without a pace, about one each.
    assert len(paced) <= 5 < len(unpaced), (paced, unpaced)
    assert len(draining) > 5, draining
