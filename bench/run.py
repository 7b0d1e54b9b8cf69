"""`make bench`: full guest checkouts over HTTP against the whole system on this machine.

For each dialect and concurrency it runs flows for a fixed time and reports completed
flows per second, failed flows, p50/p95/p99 latency per endpoint and per flow, peak RSS
per process, CPU seconds per completed flow, and the work a flow causes (internal calls,
events, PostgreSQL statements and transactions: bench/work.py), with a speed probe of the
machine before each level; then saga event lag (from an event's commit to the saga's
answer) and the order view rebuild rate. Results go to bench/results/<date>.json (a second
run that day to <date>-2.json) and docs/performance.md.

    python -m bench.run [--duration 20] [--concurrency 1,8,32] [--dialects solidus,getcandy] [--smoke]
                        [--profile DIR]

--profile samples every Python process of the system with py-spy during each level and
writes collapsed stacks (DIR/<dialect>-<concurrency>-<process>.txt) plus a summary of the
functions that hold the CPU (DIR/summary.txt).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import asyncpg
import httpx
import psutil

from bench import history, work
from bench.flows import FlowFailed, Timings, getcandy_flow, solidus_flow
from bench.targets import parse_peer, request_p99, targets
from bench.watch import ProcessWatch, Profiler, at_rest
from shared.bus import EVENT_TOPICS
from tillstream import operations
from tillstream.demo import load_demo_data
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


async def lags_ms(dsn: str, query: str, since: datetime, until: datetime) -> dict:
    """Percentiles of the `lag` seconds `query` finds for events committed in [since, until)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(query, since, until)
    finally:
        await conn.close()
    return ms([float(r["lag"]) for r in rows])


async def saga_lag(dsn: str, since: datetime, until: datetime) -> dict:
    """Commit of a participant's answer (cart, shipping, payment) → the saga's next command
    or the order's completion."""
    return await lags_ms(
        dsn, 'SELECT extract(epoch FROM o.occurred_at - c.occurred_at) AS lag FROM "order".events o'
             " JOIN (SELECT event_id::text AS id, occurred_at FROM cart.events UNION ALL"
             "       SELECT event_id::text AS id, occurred_at FROM shipping.events UNION ALL"
             "       SELECT event_id::text, occurred_at FROM payment.events) c ON c.id = o.causation_id"
             " WHERE o.type IN ('order.StockAllocationRequested', 'order.PaymentRequested', 'order.OrderCompleted')"
             " AND c.occurred_at >= $1 AND c.occurred_at < $2", since, until)


async def bench_data(system: System) -> str:
    await system.acall("shipping", "load_reference", stock_locations=[  # stock enough for any run
        {"id": 1, "name": "Main Warehouse", "stock": [{"variant_id": v, "count_on_hand": 10_000_000}
                                                      for v in (1, 2, 3, 4)]}])
    async with httpx.AsyncClient() as client:
        products = (await client.get(f"{system.gateway_url}/api/v1/products", params={"include": "variants"})).json()
    return products["data"][0]["variants"]["data"][0]["id"]


async def subscriber_lag(dsn: str, since: datetime, until: datetime) -> dict:
    """An event's commit → its handling by a subscriber: the order service's view consumer
    (`order.view`), which reads every cart, shipping and payment event."""
    return await lags_ms(
        dsn, "SELECT greatest(0, extract(epoch FROM p.processed_at - e.occurred_at)) AS lag"
             ' FROM "order".processed_events p'
             " JOIN (SELECT event_id, occurred_at FROM cart.events UNION ALL"
             "       SELECT event_id, occurred_at FROM shipping.events UNION ALL"
             "       SELECT event_id, occurred_at FROM payment.events) e ON e.event_id = p.event_id"
             " WHERE p.consumer = 'order.view' AND e.occurred_at >= $1 AND e.occurred_at < $2", since, until)


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


def write_report(result: dict, results_dir: Path, doc: Path) -> Path:
    out = results_path(results_dir, result["started_at"][:10])
    out.write_text(json.dumps(result, indent=2))
    speed = result["machine"].get("speed_probe_ms", {})
    lines = ["# Performance", "", "Generated by `make bench` (`bench/run.py`); the numbers of the latest run.", "",
             f"Machine: {result['machine']['cores']} cores, {result['machine']['memory_gib']} GiB,"
             f" {result['machine']['system']}; broker, database, services and load generator all on it."
             f" {result['duration_s']:g} s per level. Speed probe (a fixed Python loop, best of 3; 90 ms on an"
             f" unloaded host of this kind, lower is faster): {speed.get('before')} ms before the run,"
             f" {speed.get('after')} ms after.", "",
             "| dialect | concurrent flows | flows/s | failed | flow p50 / p95 / p99 ms | slowest request p99 ms |"
             " complete p99 ms | event lag p99 ms (saga / subscriber) | CPU s per flow |"
             " broker CPU s / messages held after | speed probe ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for level in result["levels"]:
        slowest, completing = request_p99(level)
        f = level["flow_ms"]
        lines.append(f"| {level['dialect']} | {level['concurrency']} | {level['flows_per_s']} | {level['failed']} |"
                     f" {f['p50']} / {f['p95']} / {f['p99']} | {slowest[0]}: {slowest[1]} | {completing} |"
                     f" {level['saga_lag_ms'].get('p99')} / {level['subscriber_lag_ms'].get('p99')} |"
                     f" {level['cpu_s_per_flow']} |"
                     f" {level['cpu_s_by_process'].get('broker (tansu)', '-')} /"
                     f" {level.get('broker_messages_held', '-')} |"
                     f" {level.get('speed_probe_ms', '-')} |")
    lines += ["", "Work per completed flow (counted, so it does not depend on the machine's speed; the last"
              " column, a ratio of CPU times, moves much less with it than CPU seconds do):", "",
              "| dialect | concurrent flows | internal HTTP calls | stored events | PostgreSQL statements |"
              " PostgreSQL transactions | system CPU ÷ load generator CPU |", "|---|---|---|---|---|---|---|"]
    for level in result["levels"]:
        w = level.get("work_per_flow") or {}
        lines.append(f"| {level['dialect']} | {level['concurrency']} | {w.get('internal_calls', '-')} |"
                     f" {w.get('events', '-')} | {w.get('statements', '-')} | {w.get('transactions', '-')} |"
                     f" {level.get('cpu_relative_to_load_generator', '-')} |")
    idle = result.get("idle_cpu_cores") or {}
    if idle:
        lines += ["", f"At rest (the system running, no requests): {round(sum(idle.values()), 2)} cores in all — "
                  + ", ".join(f"{k} {v}" for k, v in idle.items()) + ". Consumers fetching from the broker every"
                  " `KAFKA_FETCH_MAX_WAIT_MS` are most of it; every level's CPU per flow includes this share."]
    lines += ["", f"Order view rebuild: {result['rebuild']['events']} stored events"
              f" ({result['rebuild']['copied_events']} of them copies of the run's checkouts) in"
              f" {result['rebuild']['seconds']} s = {result['rebuild']['events_per_s']} events/s.", "",
              "Peak RSS per process (MiB): " + ", ".join(f"{k} {v}" for k, v in result["peak_rss_mib"].items())
              + f"; services total {result['services_rss_mib']} MiB.", "",
              "Targets of issues #16 and #7 against this run:", "",
              "| target | goal | measured | met |", "|---|---|---|---|"]
    lines += [f"| {name} | {goal} | {measured} | {'yes' if met else '**no**'} |"
              for name, goal, measured, met in targets(result)]
    lines.append("")
    # Everything below the marker is written by people (profiles, what changed) and kept.
    marker = "<!-- notes: kept by bench/run.py -->"
    notes = doc.read_text().split(marker, 1)[1] if doc.exists() and marker in doc.read_text() else "\n"
    doc.write_text("\n".join(lines) + "\n" + marker + notes)
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


async def main(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="tillstream-bench-"))
    workdir.chmod(0o755)  # its own folder (0700 from mkdtemp): PostgreSQL's user must enter it when run as root
    config = system_config(args, workdir)
    print("[bench] measuring the machine's speed ...", file=sys.stderr)
    speed_before = work.speed_probe()
    print(f"[bench] starting the system (logs in {workdir / 'logs'})", file=sys.stderr)
    system = await asyncio.to_thread(lambda: System(config).start())
    succeeded = False
    try:
        await asyncio.to_thread(load_demo_data, system)
        variant_hash = await bench_data(system)
        counters = work.WorkCounters(system.database_url,
                                     [p.internal_url for p in system.processes.values()])
        await counters.setup()
        started_at = datetime.now(timezone.utc)
        levels = []
        profiler = Profiler(system, Path(args.profile)) if args.profile else None
        with ProcessWatch(system) as watch:
            print(f"[bench] measuring the system at rest for {args.idle:g}s ...", file=sys.stderr)
            idle = await at_rest(watch, args.idle)
            for dialect in args.dialects:
                for concurrency in args.concurrency:
                    print(f"[bench] {dialect} × {concurrency} for {args.duration}s ...", file=sys.stderr)
                    speed = await asyncio.to_thread(work.speed_probe)
                    work_before = await counters.snapshot()
                    cpu_before = watch.cpu_by_process()
                    load_before = psutil.Process().cpu_times()
                    if profiler:
                        profiler.start(f"{dialect}-{concurrency}", args.duration)
                    level_started = datetime.now(timezone.utc)
                    level = await run_level(system.gateway_url, dialect, concurrency, args.duration, variant_hash)
                    level_ended = datetime.now(timezone.utc)
                    level["saga_lag_ms"] = await saga_lag(system.database_url, level_started, level_ended)
                    level["subscriber_lag_ms"] = await subscriber_lag(system.database_url, level_started, level_ended)
                    level["broker_messages_held"] = await operations.messages_held(system.bootstrap_servers,
                                                                                  EVENT_TOPICS)
                    if profiler:
                        await asyncio.to_thread(profiler.stop)
                    spent = watch.cpu_since(cpu_before)
                    load_after = psutil.Process().cpu_times()
                    spent["load generator"] = (load_after.user + load_after.system
                                               - load_before.user - load_before.system)
                    cpu = sum(v for k, v in spent.items() if k != "load generator")
                    level["cpu_s_per_flow"] = round(cpu / level["completed"], 3) if level["completed"] else None
                    # The load generator does the same Python work per flow in any version of
                    # the system, so this ratio moves much less with the host's speed.
                    level["cpu_relative_to_load_generator"] = (round(cpu / spent["load generator"], 2)
                                                               if spent["load generator"] else None)
                    level["cpu_s_by_process"] = {k: round(v, 2) for k, v in spent.items()}
                    level["speed_probe_ms"] = speed
                    level["work_per_flow"] = work.per_flow(work_before, await counters.snapshot(),
                                                           level["completed"])
                    levels.append(level)
                    print(f"[bench]   {level['flows_per_s']} flows/s, {level['failed']} failed,"
                          f" flow p99 {level['flow_ms']['p99']} ms, event lag p99: saga"
                          f" {level['saga_lag_ms']['p99']} ms, subscriber {level['subscriber_lag_ms']['p99']} ms",
                          file=sys.stderr)
        ended_at = datetime.now(timezone.utc)
        lag = await saga_lag(system.database_url, started_at, ended_at)
        print(f"[bench] growing the event history to {args.rebuild_events:,} events ...", file=sys.stderr)
        copied = await history.grow(system.database_url, args.rebuild_events)
        print("[bench] rebuilding the order view ...", file=sys.stderr)
        rebuild_started = time.monotonic()
        folded = await operations.rebuild_order_view(
            system.database_url, progress=lambda done, total: print(f"[bench]   folded {done:,} of {total:,} events",
                                                                   file=sys.stderr) if done % 50_000 == 0 else None)
        rebuild_s = time.monotonic() - rebuild_started
        await asyncio.to_thread(system.stop)
        speed_after = work.speed_probe()
        peak = {name: round(rss / 2**20, 1) for name, rss in watch.peak_rss.items()}
        result = {
            "started_at": started_at.isoformat(), "machine": machine() | {"speed_probe_ms": {
                "before": speed_before, "after": speed_after}}, "duration_s": args.duration,
            "idle_cpu_cores": idle, "levels": levels, "saga_lag_ms": lag,
            "rebuild": {"events": folded, "copied_events": copied, "seconds": round(rebuild_s, 2),
                        "events_per_s": round(folded / rebuild_s) if rebuild_s else None},
            "peak_rss_mib": peak,
            "topology": args.topology, "instances": args.instances,
            "peer_flows_per_s": parse_peer(args.peer),
            "services_rss_mib": round(sum(v for k, v in peak.items() if k in system.processes), 1),
        }
        if not args.smoke:
            out = write_report(result, ROOT / "bench" / "results", ROOT / "docs" / "performance.md")
            print(f"[bench] results in {out} and docs/performance.md", file=sys.stderr)
        print(json.dumps(result, indent=2))
        succeeded = True
        return result
    finally:
        await asyncio.to_thread(system.stop)
        if succeeded:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"[bench] logs kept in {workdir / 'logs'}", file=sys.stderr)


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


if __name__ == "__main__":
    arguments = parse()
    if arguments.soak:
        from bench.soak import soak
        asyncio.run(soak(arguments))
    else:
        asyncio.run(main(arguments))
