"""What `make bench` (bench/run.py) and `make soak` (bench/soak.py) both use: their command
line, the system they start, its data, a level of concurrent checkouts, the machine and where
results go. Each of them imports this, neither the other."""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import time
from pathlib import Path

import aiohttp
import httpx
import psutil

from bench.flows import FlowFailed, Timings, getcandy_flow, solidus_flow
from tillstream.stack import free_port
from tillstream.system import SERVICE_NAMES, System, SystemConfig

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def ms(values: list[float]) -> dict:
    return {f"p{q}": round(percentile(values, q) * 1000, 1) for q in (50, 95, 99)} | {"n": len(values)}


async def run_level(base_url: str, dialect: str, concurrency: int, duration: float, variant_hash: str) -> dict:
    timings, flow_times, failures, completed = Timings(), [], [], 0
    deadline = time.monotonic() + duration

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal completed
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                if dialect == "solidus":
                    await solidus_flow(client, timings)
                else:
                    await getcandy_flow(client, timings, variant_hash)
                flow_times.append(time.perf_counter() - started)
                completed += 1
            except (FlowFailed, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                failures.append(str(exc)[:300])

    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=30)) as client:
        started = time.monotonic()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"dialect": dialect, "concurrency": concurrency, "seconds": round(elapsed, 1), "completed": completed,
            "flows_per_s": round(completed / elapsed, 2), "failed": len(failures), "failures": failures[:5],
            "flow_ms": ms(flow_times), "endpoints_ms": {k: ms(v) for k, v in timings.requests.items()}}


async def bench_data(system: System) -> str:
    await system.acall("shipping", "load_reference", stock_locations=[  # stock enough for any run
        {"id": 1, "name": "Main Warehouse", "stock": [{"variant_id": v, "count_on_hand": 10_000_000}
                                                      for v in (1, 2, 3, 4)]}])
    async with httpx.AsyncClient() as client:
        products = (await client.get(f"{system.gateway_url}/api/v1/products", params={"include": "variants"})).json()
    return products["data"][0]["variants"]["data"][0]["id"]


def machine() -> dict:
    return {"cores": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "system": platform.platform()}


def results_path(results_dir: Path, date: str) -> Path:
    """bench/results/<date>.json, or <date>-2.json etc.: a second run that day keeps the first."""
    results_dir.mkdir(parents=True, exist_ok=True)
    out, n = results_dir / f"{date}.json", 1
    while out.exists():
        n += 1
        out = results_dir / f"{date}-{n}.json"
    return out


def system_config(args: argparse.Namespace, workdir: Path) -> SystemConfig:
    """A separate copy of the whole system for the benchmark, on free ports."""
    return SystemConfig(data_dir=workdir, gateway_port=free_port(), topology=args.topology,
                        instances=args.instances,
                        service_ports={n: [free_port() for _ in range(args.instances)] for n in SERVICE_NAMES},
                        postgres_port=free_port(), broker_port=free_port(),
                        database_url=os.environ.get("DATABASE_URL") or None,
                        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
                        log_dir=workdir / "logs", admin_key="bench", id_secret=secrets.token_hex(20),
                        gateway_key=secrets.token_hex(32), operator_key=secrets.token_hex(32),
                        # A developer's copy of the system: the test payment gateway (shared/safety.py).
                        extra_env={"TILLSTREAM_DEVELOPMENT": "true", "TILLSTREAM_PAYMENT_GATEWAY": "test"},
                        # Counts every statement (the embedded server only; a given DATABASE_URL
                        # is counted if its server preloads the extension).
                        postgres_settings={"shared_preload_libraries": "pg_stat_statements"})


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Tillstream checkout benchmark")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per dialect and concurrency")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--dialects", default="solidus,getcandy")
    parser.add_argument("--rebuild-events", type=int, default=100_000,
                        help="stored events the order view is rebuilt from (the run's checkouts, copied)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to measure the system at rest")
    parser.add_argument("--profile", metavar="DIR", help="sample every process with py-spy into DIR")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that writes no report (the test suite's)")
    parser.add_argument("--topology", default="one-process", choices=("one-process", "distributed"))
    parser.add_argument("--instances", type=int, default=1, help="instances of each service (distributed)")
    parser.add_argument("--peer", metavar="C=RATE,...",
                        help="Vendure's checkouts/s per concurrency, measured in the same hour"
                             " (../shared/peers): the report shows Tillstream's multiple of it")
    parser.add_argument("--soak", type=float, metavar="SECONDS",
                        help="instead: 8 concurrent Solidus flows for this long, reported minute by minute"
                             " (bench/soak.py)")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.dialects = args.dialects.split(",")
    return args
