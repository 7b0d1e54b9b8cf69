"""Reading and writing topics directly in tests (no consumer group: no join wait)."""
from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.envelope import envelope_for
from shared.kafka import ensure_topics, make_producer
from shared.settings import Settings


async def read_topic(settings: Settings, topic: str, *, until_count: int, timeout: float = 30,
                     settle: float = 0.0) -> list:
    """All records of `topic` from the beginning, once `until_count` have arrived.

    `settle` keeps reading that long afterwards, to catch unexpected extra records.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        partitions = None
        deadline = time.monotonic() + timeout
        while not partitions:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topic {topic} does not exist")
                await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list = []
        settle_until = None
        while True:
            batch = await consumer.getmany(timeout_ms=100)
            for msgs in batch.values():
                records.extend(msgs)
            now = time.monotonic()
            if len(records) >= until_count and settle_until is None:
                settle_until = now + settle
            if settle_until is not None and now >= settle_until:
                return records
            if now > deadline:
                raise TimeoutError(f"{len(records)} of {until_count} records on {topic}")
    finally:
        await consumer.stop()


async def publish(settings: Settings, topic: str, messages: list[tuple[bytes, bytes, list]]) -> None:
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for key, value, headers in messages:
            await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


async def publish_as_one_batch(settings: Settings, topic: str, messages: list[tuple[bytes, bytes, list]],
                               partition: int = 0) -> None:
    """One record batch: a consumer's first fetch gets all the messages together."""
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        batch = producer.create_batch()
        for key, value, headers in messages:
            assert batch.append(key=key, value=value, timestamp=None, headers=headers) is not None
        await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def consuming(settings: Settings, pool, topic: str, group: str, handler, event_types=None, background=False,
                    statement=None):
    """An EventConsumer running `handler` (and its one-statement form `statement`) on `topic`
    while the block runs; yields its task."""
    from shared.consumer import EventConsumer

    producer = make_producer(settings)
    await producer.start()
    consumer = EventConsumer(settings=settings, pool=pool, producer=producer, group_id=group,
                             topics=[topic], handler=handler, event_types=event_types, background=background,
                             statement=statement)
    task = asyncio.create_task(consumer.run())
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()


def message(event, stream="K1", sequence=1):
    """`event`'s envelope in `stream`, and the (key, value, headers) that publish it."""
    env = envelope_for(event, aggregate_type="Test", aggregate_id=stream, sequence=sequence)
    return env, (stream.encode(), env.to_json(), env.kafka_headers())


async def until_waiting_for_the_lock(blocker, held: int, task, deadline: float) -> None:
    """Until order A's first message has reached its handler: it waits for the lock."""
    while not await blocker.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                     " AND objid = $1 AND NOT granted", held):
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, "the consumer never got to order A"
        await asyncio.sleep(0.05)


async def every_topic(settings) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        return sorted(t for t in await consumer.topics() if not t.startswith("__"))
    finally:
        await consumer.stop()


async def read_all(settings, topic: str) -> list:
    """Every record `topic` holds now, as a subscriber reading it from the beginning gets them."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                fetch_max_wait_ms=10)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert partitions, topic
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends, records = await consumer.end_offsets(partitions), []
        deadline = time.monotonic() + 30
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            assert time.monotonic() < deadline, f"{topic}: {len(records)} records read"
            for batch in (await consumer.getmany(timeout_ms=100)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()
