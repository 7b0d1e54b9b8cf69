"""`tillstream watch`: the system at a glance, refreshed every second or two, for the moments
when a person would rather look than query Prometheus.

Each reading takes the figures from where they are kept (the stores, the outboxes, the
broker), not from a service's /metrics, so it works on any topology with only the database
and the broker in reach. Throughput is the difference between two readings: events appended
(the stores' highest position) and published (the measured ends of the topics each relay publishes
to) per second.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable

import asyncpg
from rich.columns import Columns
from rich.console import Group
from rich.table import Table

from shared.kafka import TOPICS
from shared.lag import LagProbe, by_group
from shared.outbox import outbox_status
from tillstream.operations import CONSUMER_GROUPS, SERVICES, connect


@dataclass
class Reading:
    at: float  # time.monotonic()
    appended: dict[str, int]  # service -> the highest position of its store
    published: dict[str, int]  # topic -> messages it has held (the sum of its partitions' ends)
    lag: dict[str, dict]  # shared/lag.py by_group
    outbox: dict[str, dict]
    dead_letters: dict[str, dict]
    sagas: dict  # status -> count for the ones in progress, and the oldest one's age


async def take_reading(conn: asyncpg.Connection, probe: LagProbe) -> Reading:
    appended, outbox, dead_letters = {}, {}, {}
    for service in SERVICES:
        appended[service] = await conn.fetchval(f'SELECT coalesce(max(position), 0) FROM "{service}".events')
        outbox[service] = await outbox_status(conn, schema=service)
        dead_letters[service] = dict(await conn.fetchrow(
            f'SELECT count(*) AS held, count(*) FILTER (WHERE replayed_at IS NULL) AS unreplayed'
            f' FROM "{service}".dead_letters'))
    saga_rows = await conn.fetch(
        "SELECT status, count(*) AS n, extract(epoch FROM now() - min(started_at)) AS oldest FROM \"order\".sagas"
        " WHERE status IN ('running', 'compensating') GROUP BY status")
    sagas = {"running": 0, "compensating": 0, "oldest_age_s": 0.0}
    for row in saga_rows:
        sagas[row["status"]] = row["n"]
        sagas["oldest_age_s"] = max(sagas["oldest_age_s"], float(row["oldest"] or 0))
    ends = await probe.ends(await probe.partitions(TOPICS))
    published = {topic: sum(end for tp, end in ends.items() if tp.topic == topic) for topic in TOPICS}
    lag = by_group(await probe.measure(CONSUMER_GROUPS, every_group=True))
    return Reading(time.monotonic(), appended, published, lag, outbox, dead_letters, sagas)


def _per_second(before: int, after: int, seconds: float) -> float:
    # A topic emptied by the embedded broker's recycling (shared/recycle.py) starts again at 0.
    return max(after - before, 0) / seconds if seconds > 0 else 0.0


def figures(before: Reading, now: Reading) -> dict:
    """What a view shows, as data (`tillstream watch --json`)."""
    seconds = now.at - before.at
    return {
        "seconds": round(seconds, 3),
        "services": {service: {
            "appended_per_s": round(_per_second(before.appended[service], now.appended[service], seconds), 2),
            # Every topic its relay publishes to (the order service's: order.events, and order.saga, retired).
            "published_per_s": round(sum(_per_second(before.published[topic], now.published[topic], seconds)
                                         for topic in TOPICS if topic.startswith(f"{service}.")), 2),
            "outbox": {k: now.outbox[service][k] for k in ("unpublished", "oldest_age_s", "parked")},
            "dead_letters": now.dead_letters[service]} for service in SERVICES},
        "lag": {group: {k: status[k] for k in ("topics", "partitions", "lag", "detail")}
                for group, status in now.lag.items()},
        "sagas": now.sagas,
    }


def render(view: dict) -> Group:
    throughput = Table(title=f"throughput (over {view['seconds']:.1f} s)", title_justify="left")
    outboxes = Table(title="outbox backlog", title_justify="left")
    letters = Table(title="dead letters", title_justify="left")
    for table, columns in ((throughput, ("appended/s", "published/s")), (outboxes, ("rows", "oldest (s)", "parked")),
                           (letters, ("held", "unreplayed"))):
        table.add_column("service")
        for column in columns:
            table.add_column(column, justify="right")
    for service, row in view["services"].items():
        outbox, held = row["outbox"], row["dead_letters"]
        throughput.add_row(service, f"{row['appended_per_s']:.1f}", f"{row['published_per_s']:.1f}")
        outboxes.add_row(service, str(outbox["unpublished"]), f"{outbox['oldest_age_s']:.1f}", str(outbox["parked"]))
        letters.add_row(service, str(held["held"]), str(held["unreplayed"]))
    lag = Table(title="consumer lag", title_justify="left")
    for column in ("group", "topics", "partitions", "lag", "most behind"):
        lag.add_column(column, justify="left" if column in ("group", "topics") else "right")
    for group, status in sorted(view["lag"].items(), key=lambda item: (-item[1]["lag"], item[0])):
        worst = max(status["detail"], key=lambda row: row["lag"], default=None)
        behind = f"{worst['topic']}[{worst['partition']}] {worst['lag']}" if worst and worst["lag"] else "-"
        lag.add_row(group, ", ".join(status["topics"]), str(status["partitions"]), str(status["lag"]), behind)
    sagas = Table(title="sagas in progress (order completions)", title_justify="left")
    for column in ("running", "compensating", "oldest (s)"):
        sagas.add_column(column, justify="right")
    sagas.add_row(str(view["sagas"]["running"]), str(view["sagas"]["compensating"]),
                  f"{view['sagas']['oldest_age_s']:.1f}")
    return Group(Columns([throughput, outboxes, letters]), lag, sagas)


async def watch(dsn: str, bootstrap: str, *, interval: float, iterations: int | None,
                show: Callable[[dict], None]) -> None:
    """Show a view's `figures` every `interval` seconds, `iterations` times (None: until
    interrupted); each covers the interval before it, so the first comes after one interval."""
    conn = await connect(dsn)
    try:
        async with LagProbe(bootstrap) as probe:
            before = await take_reading(conn, probe)
            shown = 0
            while iterations is None or shown < iterations:
                await asyncio.sleep(max(interval - (time.monotonic() - before.at), 0))
                now = await take_reading(conn, probe)
                show(figures(before, now))
                before, shown = now, shown + 1
    finally:
        await conn.close()
