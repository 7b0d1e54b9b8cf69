"""What a checkout costs in countable work, and how fast the machine was.

CPU seconds per checkout move with the host: on the shared machines this runs on, the
same code measured 0.116 and 0.16 CPU-s per checkout on different days. Counts of the
work a checkout causes (internal HTTP calls, stored events, PostgreSQL statements and
transactions) do not, so a change that removes work shows in them on any machine, and
the speed probe says how fast the machine was while the figures were taken.
"""
from __future__ import annotations

import time
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from tillstream.operations import stored_events

# The services' own routes that are not part of a checkout.
HOUSEKEEPING_ROUTES = {"/metrics", "/healthz", "/readyz"}
PROBE_ITERATIONS = 3_000_000


def speed_probe(repeats: int = 3) -> float:
    """Milliseconds a fixed pure-Python loop takes (best of `repeats`): the machine's speed
    for single-threaded Python at that moment. 90 ms on an unloaded host of this kind."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for i in range(PROBE_ITERATIONS):
            total += i
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


async def metric_samples(process_urls: list[str], family_name: str) -> list:
    """Every sample of one metric family, from each process's /metrics."""
    samples: list = []
    async with aiohttp.ClientSession() as session:
        for url in process_urls:
            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            samples += [sample for family in text_string_to_metric_families(text) if family.name == family_name
                        for sample in family.samples]
    return samples


async def internal_calls(process_urls: list[str]) -> int:
    """HTTP requests a service answered (a gateway's calls to it over HTTP, shared/rpc.py), from
    each process's /metrics: none when the services are hosted with the gateway."""
    return int(sum(sample.value for sample in await metric_samples(process_urls, "tillstream_http_request_seconds")
                   if sample.name.endswith("_count") and sample.labels.get("service") != "gateway"
                   and sample.labels.get("route") not in HOUSEKEEPING_ROUTES))


async def deliveries(process_urls: list[str]) -> int:
    """Messages the broker delivered to a consumer's handlers (each subscription counts the
    messages of its topics it is handed, acted on or passed over), from each process's
    /metrics; what an inline projection applied is not a delivery."""
    return int(sum(sample.value for sample in await metric_samples(process_urls, "tillstream_consumer_messages")
                   if sample.name.endswith("_total") and sample.labels.get("outcome") != "inline"))


class WorkCounters:
    """Internal calls, stored events, transactions and (when pg_stat_statements is loaded)
    statements, as running totals to take before and after a level."""

    def __init__(self, dsn: str, process_urls: list[str]) -> None:
        self.dsn = dsn
        self.process_urls = process_urls
        self.statements_tracked = False

    async def setup(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            preloaded = await conn.fetchval("SELECT current_setting('shared_preload_libraries')")
            if "pg_stat_statements" in preloaded:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                self.statements_tracked = True
        finally:
            await conn.close()

    async def snapshot(self) -> dict[str, Any]:
        conn = await asyncpg.connect(self.dsn)
        try:
            snap: dict[str, Any] = {
                "internal_calls": await internal_calls(self.process_urls),
                "deliveries": await deliveries(self.process_urls),
                "transactions": await conn.fetchval(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"),
                "events": await stored_events(conn),
            }
            if self.statements_tracked:
                rows = await conn.fetch(
                    "SELECT s.query, sum(s.calls)::bigint AS calls FROM pg_stat_statements s"
                    " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() GROUP BY s.query")
                snap["statements"] = {r["query"]: r["calls"] for r in rows}
            return snap
        finally:
            await conn.close()


def per_flow(before: dict[str, Any], after: dict[str, Any], flows: int, top: int = 40) -> dict[str, Any]:
    """The work of one level divided by its completed flows. The database counters also
    include the benchmark's own few queries between levels (a handful per level)."""
    if not flows:
        return {}
    work: dict[str, Any] = {name: round((after[name] - before[name]) / flows, 1)
                            for name in ("internal_calls", "deliveries", "events", "transactions")}
    if "statements" in after:
        spent = {q: calls - before["statements"].get(q, 0) for q, calls in after["statements"].items()}
        spent = {q: c for q, c in spent.items() if c > 0}
        work["statements"] = round(sum(spent.values()) / flows, 1)
        work["top_statements"] = [{"query": " ".join(q.split())[:160], "per_flow": round(c / flows, 2)}
                                  for q, c in sorted(spent.items(), key=lambda kv: -kv[1])[:top]]
    return work
