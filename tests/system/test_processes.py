"""The services as real processes: health, readiness, metrics, correlation, restarts."""
from __future__ import annotations

import json
import time

import asyncpg
import httpx

from shared.envelope import EventEnvelope
from tests.helpers.kafka import read_topic


async def test_every_process_is_healthy_ready_and_exposes_metrics(system):
    async with httpx.AsyncClient() as client:
        for process in system.processes.values():
            assert (await client.get(f"http://127.0.0.1:{process.port}/healthz")).json()["status"] == "ok"
            ready = await client.get(f"{process.internal_url}/readyz")  # internal: shared/internal.py
            assert ready.status_code == 200, (process.name, ready.text)
            metrics = (await client.get(f"{process.internal_url}/metrics")).text
            assert "tillstream_http_request_seconds" in metrics


async def test_request_id_flows_into_events_kafka_headers_and_logs(system, stack, gateway):
    request_id = f"req-{time.time_ns()}"
    response = await gateway.post("/api/orders", json={}, headers={"X-Request-Id": request_id})
    assert response.status_code == 201
    assert response.headers["x-request-id"] == request_id
    number = response.json()["number"]

    conn = await asyncpg.connect(stack.database_url)
    try:
        row = await conn.fetchrow("SELECT event_id, correlation_id FROM "
                                  "\"order\".events WHERE aggregate_id = $1", number)
    finally:
        await conn.close()
    assert row["correlation_id"] == request_id

    records = await read_topic(stack.settings(), "order.events", until_count=1, timeout=10)
    deadline = time.monotonic() + 10
    while not any(r.key == number.encode() for r in records):
        assert time.monotonic() < deadline
        records = await read_topic(stack.settings(), "order.events", until_count=len(records) + 1, timeout=10)
    record = next(r for r in records if r.key == number.encode())
    headers = dict(record.headers)
    assert headers["correlation_id"].decode() == request_id
    assert headers["event_type"] == b"order.OrderCreated"
    assert EventEnvelope.from_json(record.value).event_id == row["event_id"]

    for process in {system.process_of("order").name, "gateway" if system.distributed else "tillstream"}:
        lines = [json.loads(line) for line in (system.config.log_dir / f"{process}.log").read_text().splitlines()
                 if line.startswith("{")]
        assert any(line["correlation_id"] == request_id and line["msg"] == "request" for line in lines), process


async def test_a_killed_service_is_restarted_by_the_supervisor(system):
    from tests.helpers.processes import kill_9

    process = system.process_of("payment")
    killed = await kill_9(system, "payment")
    # The count of restarts starts afresh for a process that had been healthy: at least this one.
    assert process.pid != killed and process.alive() and process.restarts >= 1


def test_a_system_that_fails_to_start_leaves_nothing_running(stack, unique):
    """A part that exits during start-up stops what did start (its broker, its PostgreSQL),
    so no process is left holding ports and CPU for the caller to find."""
    # In the suite's folder: PostgreSQL's user may enter it (pytest's tmp_path is 0700 root's,
    # and nothing loosens a folder for it).
    tmp_path = stack.workdir / f"failing-{unique}"
    import psutil
    import pytest

    from tillstream.stack import free_port
    from tillstream.system import System, SystemConfig

    system = System(SystemConfig(
        data_dir=tmp_path / "data", gateway_port=free_port(), broker_port=free_port(), postgres_port=free_port(),
        durable_postgres=False, log_dir=tmp_path / "logs", admin_key="k", id_secret="s", gateway_key="c",
        extra_env={"KAFKA_COMMIT_INTERVAL_MS": "often"}))  # a setting the host cannot read: it exits
    with pytest.raises(RuntimeError, match="exited during start-up"):
        system.start(ready_timeout=60)
    started = [p.proc for p in (system.broker, system.postgres)] + [p.proc for p in system.processes.values()]
    assert len(started) == 3 and all(proc is not None for proc in started)
    assert not [proc.pid for proc in started if psutil.pid_exists(proc.pid) and proc.poll() is None]
    assert not (tmp_path / "data" / "pids").exists() or not (tmp_path / "data" / "pids").read_text().strip()
