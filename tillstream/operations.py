"""What the operators' CLI does, as plain async functions (cli.py only presents them).

Every function takes the database DSN (and Kafka bootstrap servers where needed) and
works across the four service schemas. Only the order view rebuild imports a service
module: the projection's own `fold`, so a rebuild cannot differ from the live view.
"""
from __future__ import annotations

import asyncio
import gc
import json
import time
from datetime import datetime
from typing import AsyncIterator, Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contracts import SERVICES  # (importing shared.contracts registers the upcasters)
from shared.envelope import EventEnvelope, decode_event_json, newest_message, upcast
from shared.eventstore import COLUMNS, METADATA_COLUMNS, stored_envelope
from shared.lag import LagProbe, by_group
from shared.outbox import outbox_status


def service_schema(service: str) -> str:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    return service


async def connect(dsn: str) -> asyncpg.Connection:
    from shared.db import _init_connection

    conn = await asyncpg.connect(dsn)
    await _init_connection(conn)
    return conn


# -- events -----------------------------------------------------------------------------
async def order_story(dsn: str, number: str) -> list[tuple[str, EventEnvelope]]:
    """Every event of one order across all services, in causal order: an event always
    follows the event that caused it; otherwise by time."""
    conn = await connect(dsn)
    try:
        found = []
        for service in SERVICES:
            # The order service's streams include its completions' (their commands).
            sagas = ' OR aggregate_id IN (SELECT id FROM "order".sagas WHERE key = $1)' if service == "order" else ""
            rows = await conn.fetch(f'SELECT {COLUMNS} FROM "{service}".events WHERE aggregate_id = $1{sagas}', number)
            found += [(service, upcast(stored_envelope(r))) for r in rows]  # shown as subscribers read them
    finally:
        await conn.close()
    found.sort(key=lambda item: (item[1].occurred_at, item[0], item[1].sequence))
    by_id = {str(e.event_id): (s, e) for s, e in found}
    ordered, placed = [], set()

    def place(item: tuple[str, EventEnvelope]) -> None:
        event_id = str(item[1].event_id)
        if event_id in placed:
            return
        cause = by_id.get(item[1].causation_id or "")
        if cause is not None:
            place(cause)
        placed.add(event_id)
        ordered.append(item)

    for item in found:
        place(item)
    return ordered


async def tail(bootstrap: str, topic: str, *, from_beginning: bool, limit: int | None,
               idle_timeout: float | None = None) -> AsyncIterator[tuple[int, int, bytes | None, bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise ValueError(f"no topic {topic!r}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        count, last_seen = 0, time.monotonic()
        while limit is None or count < limit:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    value, _ = newest_message(record.value or b"", list(record.headers or ()))
                    yield record.partition, record.offset, record.key, value
                    count += 1
                    last_seen = time.monotonic()
                    if limit is not None and count >= limit:
                        return
            if idle_timeout is not None and time.monotonic() - last_seen > idle_timeout:
                return
    finally:
        await consumer.stop()


# -- outbox (dead letters: dead_letters.py) -----------------------------------------------------------
async def outboxes(dsn: str) -> dict[str, dict]:
    conn = await connect(dsn)
    try:
        return {service: await outbox_status(conn, schema=service) for service in SERVICES}
    finally:
        await conn.close()


# -- replay -----------------------------------------------------------------------------
_ENVELOPE_COLUMNS = [c.strip() for c in COLUMNS.split(",")]


async def replay(dsn: str, bootstrap: str, service: str, *, from_position: int = 0, until_position: int | None = None,
                 since: datetime | None = None, until: datetime | None = None, rate: float | None = None,
                 progress: Callable[[int, int], None] | None = None, batch_size: int = 500) -> int:
    """Publish stored events of a service again, in global order, each to the topic and
    under the key it was published with (`events.message_topic`, `events.message_key`:
    shared/sql/009_event_keys.sql), so every copy lands on its live partition (the producer
    hashes keys as the outbox relay's does). Consumers are idempotent, so a replay changes
    no state and fires no external effect twice; it serves subscribers that lost their data."""
    schema = service_schema(service)
    conn = await connect(dsn)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        where = ["position > $1"]
        args: list = [from_position]
        for clause, value in (("position <= ${}", until_position), ("occurred_at >= ${}", since),
                              ("occurred_at < ${}", until)):
            if value is not None:
                args.append(value)
                where.append(clause.format(len(args)))
        condition = " AND ".join(where)
        total = await conn.fetchval(f'SELECT count(*) FROM "{schema}".events WHERE {condition}', *args)
        sent, last, started = 0, from_position, time.monotonic()
        while sent < total:
            rows = await conn.fetch(f"SELECT {COLUMNS}, coalesce(message_topic, '{schema}.events') AS message_topic,"
                                    " coalesce(message_key, aggregate_id) AS message_key"
                                    f' FROM "{schema}".events WHERE {condition}'
                                    f" ORDER BY position LIMIT {batch_size}", last, *args[1:])
            if not rows:
                break
            acks = []
            for row in rows:
                # Published as subscribers read it, never as stored (v1 events may hold a credential).
                envelope = upcast(stored_envelope({c: row[c] for c in _ENVELOPE_COLUMNS}))
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                acks.append(await producer.send(row["message_topic"], value=envelope.to_json(),
                                                key=row["message_key"].encode(), headers=envelope.kafka_headers()))
                sent += 1
                last = row["position"]
            await asyncio.gather(*acks)
            if progress:
                progress(sent, total)
        return sent
    finally:
        await producer.stop()
        await conn.close()


# -- sagas (the order service's completions) --------------------------------------------------
_SAGA_COLUMNS = ("id, saga, key AS order_number, status, invoked[cardinality(invoked)] AS step, pending, failure,"
                 " attempts, abort_requested, force_requested, started_at, deadline_at, ended_at")


async def sagas(dsn: str, *, include_ended: bool = False, limit: int = 100) -> list[dict]:
    """Completions in progress (with `include_ended`, the latest ones too), newest first."""
    conn = await connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT {_SAGA_COLUMNS} FROM "order".sagas'
                                " WHERE $1 OR status IN ('running', 'compensating') ORDER BY started_at DESC LIMIT $2",
                                include_ended, limit)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def abort_saga(dsn: str, saga_or_order: str) -> list[dict]:
    """Ask the saga workers to compensate a running completion now (by saga id or order
    number): its deadline is moved to now, and the next sweep fails it as `aborted`."""
    return await flag_sagas(dsn, saga_or_order, "abort_requested", status="running")


async def flag_sagas(dsn: str, saga_or_order: str, flag: str, *, status: str) -> list[dict]:
    """Set an operator's `flag` on the sagas in `status` named by saga id or order number, and
    move their deadline to now, so the next sweep acts on it (shared/saga.py)."""
    if flag not in ("abort_requested", "force_requested"):
        raise ValueError(f"no such request {flag!r}")
    conn = await connect(dsn)
    try:
        rows = await conn.fetch(
            f'UPDATE "order".sagas SET {flag} = true, deadline_at = now()'
            f" WHERE (id = $1 OR key = $1) AND status = $2 RETURNING {_SAGA_COLUMNS}", saga_or_order, status)
    finally:
        await conn.close()
    return [dict(r) for r in rows]


async def saga_status(dsn: str, saga_id: str) -> str | None:
    conn = await connect(dsn)
    try:
        return await conn.fetchval('SELECT status FROM "order".sagas WHERE id = $1', saga_id)
    finally:
        await conn.close()


# -- projections ---------------------------------------------------------------------------
# Every consumer group of the system and the topics it reads (a service's subscriptions
# to the same topics at the same pace share a group: shared/service.py `consumer_groups`; a unit test holds
# this list to the services' definitions).
CONSUMER_GROUPS = {
    "cart.orders": ["order.events"],
    "order.view+saga": ["cart.events", "payment.events", "shipping.events"],
    "shipping.orders": ["order.events"],
    "payment.orders": ["order.events"],
}


async def _partitions(probe: AIOKafkaConsumer, topics: list[str] | tuple[str, ...]) -> list[TopicPartition]:
    await probe._client.force_metadata_update()
    return [TopicPartition(t, p) for t in topics for p in sorted(probe.partitions_for_topic(t) or ())]


async def consumer_lag(bootstrap: str, groups: dict[str, list[str]] | None = None, *,
                       every_group: bool = True) -> dict[str, dict]:
    """Per consumer group (ours, on all their partitions, and with `every_group` each other
    group on the broker, where it has committed): its topics, partitions and total lag, and
    per partition the committed offset, the measured end and the lag (shared/lag.py)."""
    async with LagProbe(bootstrap) as probe:
        return by_group(await probe.measure(CONSUMER_GROUPS if groups is None else groups, every_group=every_group))


async def messages_held(bootstrap: str, topics: list[str] | tuple[str, ...]) -> int:
    """Messages the broker holds on `topics` (the embedded broker keeps every one in
    memory, and its cost per fetch grows with them: docs/performance.md)."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await probe.start()
    try:
        tps = await _partitions(probe, topics)
        if not tps:
            return 0
        ends, starts = await probe.end_offsets(tps), await probe.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await probe.stop()


# The events a rebuild folds: all but the completion saga's streams (its commands to the
# participants say nothing of an order's state: what they ask for shows once answered).
FOLDED = "aggregate_type <> 'CompletionSaga'"


async def stored_events(conn: asyncpg.Connection, where: str = "true") -> int:
    """Events in the four stores together (those `where` holds for)."""
    return sum([await conn.fetchval(f'SELECT count(*) FROM "{s}".events WHERE {where}') for s in SERVICES])


async def rebuild_order_view(dsn: str, progress: Callable[[int, int], None] | None = None,
                             batch_size: int = 10_000) -> int:
    """Rebuild the order service's order view from all four stores and swap it in
    atomically: readers see the old view until the commit, never a partial one.

    Every stored event is folded in memory with the projection's own `fold` (the one place
    tooling imports a service module, so a rebuild and the live view cannot differ in
    logic); then, under a lock that holds the view's writers back, the events stored in
    the meantime are folded too and the tables' contents are replaced in one transaction.
    Returns the number of events folded."""
    from services.order.memory_view import MemoryOrderView

    conn = await connect(dsn)
    # Hundreds of thousands of short-lived objects and no cycles among them: the cyclic
    # garbage collector would only rescan the growing heap, over and over.
    collecting = gc.isenabled()
    gc.disable()
    try:
        view = MemoryOrderView()
        marks = {s: 0 for s in SERVICES}
        total = await stored_events(conn, FOLDED)
        done = await _fold(conn, marks, view, batch_size, progress, total)
        async with conn.transaction():
            # Replacing the contents (not the tables) keeps the services' prepared
            # statements valid.
            await conn.execute('LOCK TABLE "order".order_view, "order".order_line_items IN EXCLUSIVE MODE')
            done += await _fold(conn, marks, view, batch_size, None, total)
            await conn.execute('TRUNCATE "order".order_line_items, "order".order_view')
            await view.write(conn, "order")
        return done
    finally:
        if collecting:
            gc.enable()
        await conn.close()


async def _fold(conn, marks: dict[str, int], view, batch_size: int, progress, total: int) -> int:
    """Fold every event after `marks` (per store) into `view`, merged by time.

    PostgreSQL merges the four stores and streams the result through a cursor, so the
    rebuild holds one batch of events at a time (plus the view it builds), however long
    the history is."""
    from services.order.projections import fold_all

    stores = " UNION ALL ".join(
        f"SELECT {METADATA_COLUMNS}, payload::text AS payload_json, {rank} AS store FROM \"{service}\".events"
        f" WHERE position > ${rank + 1} AND {FOLDED}" for rank, service in enumerate(SERVICES))
    query = f"SELECT * FROM ({stores}) merged ORDER BY occurred_at, sequence, store, position"
    done = 0
    async with conn.transaction():  # a cursor lives in a transaction
        await conn.execute("SET LOCAL work_mem = '256MB'")  # the merge sorts in memory when it can
        cursor = await conn.cursor(query, *(marks[s] for s in SERVICES))
        while rows := await cursor.fetch(batch_size):
            envelopes, events = [], []
            for row in rows:
                metadata = dict(row)
                payload_json, store = metadata.pop("payload_json"), metadata.pop("store")
                # The payload goes straight from JSON into its event (the costliest step
                # of a rebuild); the envelope keeps only what the fold reads besides it.
                envelopes.append(EventEnvelope.model_validate({**metadata, "payload": {}}))
                events.append(decode_event_json(row["type"], row["version"], payload_json))
                marks[SERVICES[store]] = max(marks[SERVICES[store]], row["position"])
            await fold_all(view, envelopes, events)
            done += len(rows)
            if progress:
                progress(done, total)
    return done


def envelope_json(service: str, envelope: EventEnvelope) -> dict:
    return {"service": service, **json.loads(envelope.model_dump_json())}
