"""The embedded broker keeps every message; a one-process system empties its topics once
every consumer group has handled what they hold (shared/recycle.py). Real processes, a broker
of the test's own, real checkouts: nothing is lost or handled twice across the emptying."""
from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import urlsplit, urlunsplit
from urllib.request import urlopen

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.flows import Timings, solidus_flow
from bench.run import bench_data
from tests.conftest import TEST_GATEWAY_KEY, TEST_ID_SECRET, TEST_OPERATOR_KEY
from tests.helpers.waiting import quiet
from tillstream.stack import free_port

TOPICS = ("cart.events", "order.events", "shipping.events", "payment.events")
CHECKOUTS = 24


def other_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def messages_held(bootstrap: str) -> int:
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await probe.start()
    try:
        partitions = [TopicPartition(t, p) for t in TOPICS for p in probe.partitions_for_topic(t) or ()] or \
            [TopicPartition(t, p) for t in TOPICS for p in range(6)]
        return sum((await probe.end_offsets(partitions)).values())
    finally:
        await probe.stop()


async def test_a_one_process_system_empties_its_broker_topics_and_loses_nothing(stack):
    from tillstream.demo import load_demo_data
    from tillstream.system import SERVICE_NAMES, System, SystemConfig

    database = f"recycle_{int(time.time() * 1000)}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = other_database(stack.database_url, database)
    config = SystemConfig(
        data_dir=stack.workdir / database, gateway_port=free_port(), broker_port=free_port(),
        service_ports={n: [free_port()] for n in SERVICE_NAMES}, database_url=dsn,
        log_dir=stack.workdir / "logs" / database, admin_key="test-admin-key", id_secret=TEST_ID_SECRET,
        gateway_key=TEST_GATEWAY_KEY, operator_key=TEST_OPERATOR_KEY,
        # A checkout publishes 27 messages: empty the topics every few checkouts.
        extra_env={"BROKER_RECYCLE_AFTER_MESSAGES": "150", "BROKER_RECYCLE_CHECK_S": "0.2",
                   "GATEWAY_MAX_IN_FLIGHT": "0"})
    system = await asyncio.to_thread(lambda: System(config).start())
    db = await asyncpg.connect(dsn)
    try:
        await asyncio.to_thread(load_demo_data, system)
        await bench_data(system)
        async with aiohttp.ClientSession(system.gateway_url) as client:
            async def checkouts(n: int) -> None:
                for _ in range(n):
                    await solidus_flow(client, Timings())  # each ends `complete`, or raises

            await asyncio.gather(*(checkouts(CHECKOUTS // 4) for _ in range(4)))

        # Every event reached every consumer that wants it exactly once (their idempotency
        # records; a redelivery would not add one, a loss would leave one missing).
        async def settled() -> bool:
            unpublished = sum([await db.fetchval(f'SELECT count(*) FROM "{s}".outbox') for s in SERVICE_NAMES])
            view = await db.fetchval("SELECT count(*) FROM \"order\".processed_events WHERE consumer = 'order.view'")
            upstream = sum([await db.fetchval(f'SELECT count(*) FROM "{s}".events')
                            for s in ("cart", "shipping", "payment")])
            return unpublished == 0 and view == upstream

        deadline = time.monotonic() + 30
        while not await settled():
            assert time.monotonic() < deadline, "not every event reached the order view"
            await asyncio.sleep(0.2)
        # The saga likewise: each participant's answer recorded once (from the call's reply or
        # from Kafka, whichever came first: one idempotency record).
        for schema, answer in (("cart", "cart.CartLocked"), ("shipping", "shipping.StockAllocated"),
                               ("payment", "payment.PaymentsProcessed")):
            answered = await db.fetchval(f"SELECT count(*) FROM {schema}.events WHERE type = $1", answer)
            assert answered == CHECKOUTS
            assert await db.fetchval(f"SELECT count(*) FROM \"order\".processed_events p JOIN {schema}.events e"
                                     " ON e.event_id = p.event_id WHERE p.consumer = 'order.saga' AND e.type = $1",
                                     answer) == answered
        completed = await db.fetchval("SELECT count(*) FROM \"order\".order_view WHERE state = 'complete'")
        assert completed == CHECKOUTS
        # Each authorised once (the card is authorised, not captured: Solidus's balance_due).
        assert await db.fetchval("SELECT count(*) FROM payment.events WHERE type = 'payment.PaymentAuthorized'") \
            == CHECKOUTS
        assert await db.fetchval("SELECT count(*) FROM \"order\".order_view WHERE state = 'complete'"
                                 " AND payments->0->>'state' = 'pending' AND jsonb_array_length(payments) = 1") \
            == CHECKOUTS
        # The recycler works in the background, a check every BROKER_RECYCLE_CHECK_S: wait until it
        # has emptied the topics at least twice and then stood still (each takes well under a
        # second), rather than count at whatever moment the checkouts happened to end.
        def logged() -> str:
            return "".join(p.read_text() for p in config.log_dir.glob("*.log"))

        await quiet(lambda: logged().count("broker topics emptied"), quiet_s=1.5, ready=lambda n: n >= 2,
                    what="the count of topics emptied")
        published = sum([await db.fetchval(f'SELECT count(*) FROM "{s}".events') for s in SERVICE_NAMES])
        held = await messages_held(system.bootstrap_servers)
        logs = logged()
        emptied = logs.count("broker topics emptied")
        assert emptied >= 2, logs[-3000:]
        assert held < published / 2, (held, published)
        assert "Traceback" not in logs, logs[logs.index("Traceback") - 500:][:4000]
        # Operators see it on /metrics: how often, and how long the relays stood still.
        metrics = (await asyncio.to_thread(urlopen, f"{system.internal_url}/metrics")).read().decode()
        counted = re.search(r'^tillstream_broker_topics_emptied_total\{outcome="emptied"\} (\S+)$', metrics, re.M)
        assert counted and float(counted.group(1)) == emptied, [
            line for line in metrics.splitlines() if "emptied_total" in line]
        assert "tillstream_broker_recycle_pause_seconds_count" in metrics
    finally:
        await db.close()
        await asyncio.to_thread(system.stop)
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await admin.close()
