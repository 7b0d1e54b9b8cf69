"""Lag and health an operator can alert on, against the real stack: the gauges on /metrics
(parsed with Prometheus's own parser), `tillstream projections status`, the measured
partition ends on the embedded broker, and `tillstream watch`."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from shared.kafka import ensure_topics
from shared.lag import LagProbe
from tests.helpers.kafka import publish_as_one_batch
from tests.solidus.test_complete import full_flow
from tests.test_operations_cli import cli

SERVICES = ("cart", "order", "shipping", "payment")
GAUGES = ("tillstream_consumer_lag", "tillstream_outbox_backlog", "tillstream_outbox_oldest_age_seconds",
          "tillstream_outbox_parked", "tillstream_dead_letters", "tillstream_dead_letters_unreplayed",
          "tillstream_sagas", "tillstream_saga_oldest_in_progress_age_seconds", "tillstream_db_pool_size",
          "tillstream_db_pool_in_use", "tillstream_db_pool_max", "tillstream_health_sample_age_seconds")


def metrics_urls(system) -> list[str]:
    """Every /metrics of the system (internal listeners: never the public port): the gateway's
    (or the one process's), and each service instance's when apart."""
    urls = [f"{system.internal_url}/metrics"]
    if system.distributed:
        urls += [f"http://127.0.0.1:{port}/metrics" for ports in system.config.ports().values() for port in ports]
    return urls


async def scrape(system) -> dict[str, list]:
    """Samples by metric name, from every /metrics of the system, parsed by prometheus_client."""
    samples: dict[str, list] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for url in metrics_urls(system):
            response = await client.get(url)
            assert response.status_code == 200, url
            for family in text_string_to_metric_families(response.text):
                for sample in family.samples:
                    samples.setdefault(sample.name, []).append(sample)
    return samples


async def eventually(check, timeout: float = 40, what: str = ""):
    """`check()`'s answer once it is truthy (the gauges are refreshed every METRICS_REFRESH_MS)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = await check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"{what}: never true"
        await asyncio.sleep(0.5)


def group_lag(samples: dict, group: str, topic: str) -> dict[int, float] | None:
    found = {int(s.labels["partition"]): s.value for s in samples.get("tillstream_consumer_lag", [])
             if s.labels["group"] == group and s.labels["topic"] == topic}
    return found or None


def by_service(samples: dict, name: str, **labels) -> dict[str, float]:
    """A per-service gauge; reported by every instance of the service, the largest value."""
    found: dict[str, float] = {}
    for s in samples.get(name, []):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            found[s.labels["service"]] = max(found.get(s.labels["service"], s.value), s.value)
    return found


async def consume_and_commit(bootstrap: str, topic: str, group: str, expected: int) -> None:
    """A subscriber of the test's own: read `expected` more messages, commit, and stop."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    try:
        seen, deadline = 0, time.monotonic() + 30
        while seen < expected:
            assert time.monotonic() < deadline, f"{seen} of {expected} messages read"
            seen += sum(len(records) for records in (await consumer.getmany(timeout_ms=200)).values())
        await consumer.commit()
    finally:
        await consumer.stop()


async def write_in_batches(stack, topic: str, sizes: tuple[int, ...], partition: int = 0) -> None:
    for size in sizes:
        await publish_as_one_batch(stack.settings(), topic, [(b"k", b'{"n": %d}' % i, []) for i in range(size)],
                                   partition=partition)


async def test_a_partition_written_in_multi_record_batches_has_its_true_end(stack):
    """tansu's ListOffsets answers the last batch's base offset + 1 (41 here); the probe
    measures 81, what a reader finds there."""
    topic = f"lag-ends-{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.settings(), [topic])
    await write_in_batches(stack, topic, (10, 30, 41))
    async with LagProbe(stack.bootstrap_servers) as probe:
        ends = await probe.ends(await probe.partitions([topic]))
        assert ends[TopicPartition(topic, 0)] == 81
        assert all(end == 0 for tp, end in ends.items() if tp.partition != 0)
        await write_in_batches(stack, topic, (5,))  # the reported end moves: measured again
        assert (await probe.ends([TopicPartition(topic, 0)]))[TopicPartition(topic, 0)] == 86


@pytest.mark.both_topologies
async def test_metrics_hold_every_gauge_and_lag_follows_a_stopped_subscriber(system, stack, gateway, monkeypatch):
    number, *_ = await full_flow(gateway, card=None)
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"subscriber-{uuid.uuid4().hex[:8]}"
    await ensure_topics(stack.settings(), [topic])
    await write_in_batches(stack, topic, (20, 1))
    await consume_and_commit(stack.bootstrap_servers, topic, group, 21)

    caught_up = await eventually(lambda: _lag_is(system, group, topic, 0), what="the subscriber's lag is 0")
    for name in GAUGES:
        assert caught_up.get(name), f"{name} missing from /metrics"
    assert {"order.view+saga", "payment.orders", "shipping.orders", "cart.orders"} <= {
        s.labels["group"] for s in caught_up["tillstream_consumer_lag"]}
    for name in ("tillstream_outbox_backlog", "tillstream_dead_letters", "tillstream_db_pool_size",
                 "tillstream_db_pool_max", "tillstream_saga_oldest_in_progress_age_seconds"):
        assert set(by_service(caught_up, name)) == set(SERVICES), name
    assert all(v >= 1 for v in by_service(caught_up, "tillstream_db_pool_size").values())

    # The stores' own counts, as the gauges must show them once measured.
    conn = await asyncpg.connect(stack.database_url)
    try:
        letters = {s: await conn.fetchval(f'SELECT count(*) FROM "{s}".dead_letters') for s in SERVICES}
        completed = await conn.fetchval("SELECT count(*) FROM \"order\".sagas WHERE status = 'completed'")
        assert await conn.fetchval("SELECT status FROM \"order\".sagas WHERE key = $1", number) == "completed"
    finally:
        await conn.close()

    async def matches_the_stores():
        samples = await scrape(system)
        return (by_service(samples, "tillstream_dead_letters") == letters and
                by_service(samples, "tillstream_sagas", status="completed")["order"] == completed)
    await eventually(matches_the_stores, what="dead letters and completed sagas as the stores hold them")

    # Stopped, the subscriber falls behind by what is published meanwhile (in multi-record
    # batches: the lag counts them all, not the broker's short answer for the end)...
    await write_in_batches(stack, topic, (30, 11))
    behind = await eventually(lambda: _lag_is(system, group, topic, 41), what="the subscriber is 41 behind")
    assert group_lag(behind, group, topic)[0] == 41
    status = json.loads(cli(stack, "projections", "status", "--json").stdout)
    assert status[group]["lag"] == 41
    rows = {r["partition"]: (r["committed"], r["end"], r["lag"]) for r in status[group]["detail"]}
    assert rows.pop(0) == (21, 62, 41)
    assert all(lag == 0 for *_, lag in rows.values())  # it committed its place on the empty ones too
    assert status["order.view+saga"]["partitions"] >= 3  # our groups: every partition of their topics
    # ...and once it has read them, it is back at 0.
    await consume_and_commit(stack.bootstrap_servers, topic, group, 41)
    await eventually(lambda: _lag_is(system, group, topic, 0), what="the subscriber caught up")
    assert json.loads(cli(stack, "projections", "status", "--json").stdout)[group]["lag"] == 0
    monkeypatch.setenv("COLUMNS", "200")  # the table's width when not on a terminal
    text = cli(stack, "projections", "status").stdout
    assert group in text and topic in text


async def _lag_is(system, group: str, topic: str, lag: int) -> dict | None:
    samples = await scrape(system)
    partitions = group_lag(samples, group, topic)
    return samples if partitions is not None and sum(partitions.values()) == lag else None


@pytest.mark.both_topologies
async def test_request_latency_tells_the_dialects_routes_apart(system, gateway):
    await gateway.get("/api/orders/R000000001")
    await gateway.get("/api/v1/orders/nonexistent")
    samples = await scrape(system)
    routes = {s.labels["route"] for s in samples["tillstream_http_request_seconds_count"]
              if s.labels["service"] == "gateway"}
    assert "/api/orders/{number}" in routes
    assert "/api/v1/orders/{order_hash}" in routes
    assert "/orders/{number}" not in routes and "/orders/{order_hash}" not in routes


async def test_watch_prints_throughput_lag_sagas_outbox_and_dead_letters(system, stack, gateway):
    """One view over 3 s while checkouts keep coming: the order service's appended and published
    rates are not 0, and every section is there (at a terminal's default 80 columns)."""
    watching = asyncio.ensure_future(asyncio.to_thread(cli, stack, "watch", "--once", "--interval", "3"))
    while not watching.done():
        await full_flow(gateway, card=None)
    view = (await watching).stdout
    for section in ("throughput", "appended/s", "published/s", "outbox backlog", "dead letters", "unreplayed",
                    "consumer lag", "order.view+saga", "payment.orders", "sagas in progress", "compensating"):
        assert section in view, section
    appended, published = map(float, re.search(r"│ order\s+│\s+([\d.]+) │\s+([\d.]+) │", view).groups())
    assert appended > 0 and published > 0, view
    assert "consumer lag" in cli(stack, "watch", "--iterations", "2", "--interval", "0.3").stdout
    views = [json.loads(line) for line in cli(stack, "watch", "--json", "--iterations", "2", "--interval", "0.3")
             .stdout.splitlines()]
    assert len(views) == 2 and set(views[0]["services"]) == set(SERVICES)
    assert views[0]["lag"]["order.view+saga"]["partitions"] >= 3 and {"running", "compensating"} <= set(
        views[0]["sagas"])
    # Live until Ctrl-C, which ends it cleanly. Run as from a terminal, where Ctrl-C is heard: a
    # suite started in the background by a shell without job control inherits SIGINT ignored,
    # and so would the CLI (it then runs on, as a background job should).
    env = {**os.environ, "DATABASE_URL": stack.database_url, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap_servers}
    at_a_terminal = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
                     " runpy.run_module('tillstream.cli', run_name='__main__')")
    live = subprocess.Popen([sys.executable, "-c", at_a_terminal, "watch", "--interval", "0.5"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        await asyncio.sleep(4)
        assert live.poll() is None, live.communicate()
        live.send_signal(signal.SIGINT)
        out, err = live.communicate(timeout=20)
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    assert live.returncode == 0 and "Traceback" not in err, err[-2000:]
