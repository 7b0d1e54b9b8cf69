"""The gauges an operator alerts on, on /metrics: consumer lag, outbox backlog and age, dead
letters held, sagas by state and age, database pools.

A scrape must stay cheap however often it comes, and prometheus_client collects without an
event loop, so the figures that need the database or the broker are measured by one
background task per process (`HEALTH`), every METRICS_REFRESH_MS, each round bounded by
METRICS_REFRESH_TIMEOUT_MS; a scrape reads the last round (its age is a gauge too). Pool use
is read at scrape time: it is in memory.

What a process reports is what it hosts: each service attached (`attach`, by
shared/service.py's runtime) brings its schema and its consumer groups; the process serving
the public API (the gateway: alone, or with every service in one process) also reports every
other group on the broker, so a subscriber's lag is seen too. In the distributed topology a
group run by several instances is reported by each of them: aggregate with `max`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg
from aiokafka.errors import KafkaError
from prometheus_client.core import REGISTRY, GaugeMetricFamily

from shared.lag import LagProbe, PartitionLag
from shared.settings import Settings

log = logging.getLogger(__name__)

# A database or broker away for a while: logged without a traceback.
_EXPECTED = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError)
SAGA_STATES = ("running", "compensating", "completed", "failed")


@dataclass
class Hosted:
    """A service this process runs: its pool (schema) and its consumer groups."""
    name: str
    pool: asyncpg.Pool
    groups: dict[str, list[str]]


@dataclass
class Snapshot:
    lag: list[PartitionLag] = field(default_factory=list)
    outbox: dict[str, dict] = field(default_factory=dict)  # service -> unpublished, oldest_age_s, parked
    dead_letters: dict[str, dict] = field(default_factory=dict)  # service -> held, unreplayed
    sagas: dict[str, dict] = field(default_factory=dict)  # service -> {status: count, "oldest_age_s": ...}
    taken_at: float | None = None  # time.time() of the last complete round


class HealthSampler:
    def __init__(self) -> None:
        self.hosted: dict[str, Hosted] = {}
        self.every_group = False
        self.settings: Settings | None = None
        self.snapshot = Snapshot()
        self._task: asyncio.Task | None = None
        self._probe: LagProbe | None = None

    def attach(self, settings: Settings, hosted: Hosted | None = None, *, every_group: bool = False) -> None:
        """Report `hosted` (and, with `every_group`, every consumer group on the broker) from now on."""
        self.settings = settings
        if hosted is not None:
            self.hosted[hosted.name] = hosted
        self.every_group = self.every_group or every_group
        if settings.metrics_refresh_ms > 0 and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name="health-sampler")

    async def detach(self, name: str | None = None) -> None:
        """Stop reporting `name` (None: stop reporting every group); stop when nothing is left."""
        if name is None:
            self.every_group = False
        else:
            self.hosted.pop(name, None)
        if self.hosted or self.every_group:
            return
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.snapshot = Snapshot()

    async def _run(self) -> None:
        settings = self._settings()
        interval = settings.metrics_refresh_ms / 1000
        timeout = settings.metrics_refresh_timeout_ms / 1000
        failing = False
        try:
            while True:
                started = time.monotonic()
                try:
                    self.snapshot = await asyncio.wait_for(self.sample(), timeout)
                    failing = False
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never a reason to stop measuring: the next round may pass
                    if not failing:  # once per outage, not every round
                        log.warning("health sampling failed; the gauges keep their last values",
                                    exc_info=not isinstance(exc, _EXPECTED), extra={"fields": {"error": repr(exc)}})
                    failing = True
                    await self._close_probe()  # a new connection next round
                await asyncio.sleep(max(interval - (time.monotonic() - started), interval / 4))
        finally:
            await self._close_probe()

    def _settings(self) -> Settings:
        if self.settings is None:
            raise RuntimeError("the health sampler runs only once a process has given it its settings")
        return self.settings

    async def _close_probe(self) -> None:
        if self._probe is not None:
            probe, self._probe = self._probe, None
            await probe.stop()

    async def sample(self) -> Snapshot:
        snapshot = Snapshot()
        for name, hosted in list(self.hosted.items()):
            snapshot.outbox[name], snapshot.dead_letters[name], snapshot.sagas[name] = await _database_figures(
                hosted.pool)
        groups = {g: topics for hosted in self.hosted.values() for g, topics in hosted.groups.items()}
        if groups or self.every_group:
            if self._probe is None:
                self._probe = await LagProbe(self._settings().kafka_bootstrap_servers).start()
            snapshot.lag = await self._probe.measure(groups, every_group=self.every_group)
        snapshot.taken_at = time.time()
        return snapshot

    # -- the prometheus_client collector ---------------------------------------------------------
    def describe(self):
        return list(self._families())

    def collect(self):
        return list(self._families(self.snapshot, self.hosted))

    @staticmethod
    def _families(snapshot: Snapshot | None = None, hosted: dict[str, Hosted] | None = None):
        lag = GaugeMetricFamily("tillstream_consumer_lag", "Messages on a partition the group has not committed"
                                " past (the partition's measured end less its committed offset)",
                                labels=["group", "topic", "partition"])
        backlog = GaugeMetricFamily("tillstream_outbox_backlog", "Outbox rows not yet published (parked ones apart)",
                                    labels=["service"])
        oldest = GaugeMetricFamily("tillstream_outbox_oldest_age_seconds",
                                   "Age of the oldest unpublished outbox row (0: none)", labels=["service"])
        parked = GaugeMetricFamily("tillstream_outbox_parked", "Outbox rows the broker refused for good",
                                   labels=["service"])
        held = GaugeMetricFamily("tillstream_dead_letters", "Dead letters held (the dead_letters table)",
                                 labels=["service"])
        unreplayed = GaugeMetricFamily("tillstream_dead_letters_unreplayed", "Dead letters not yet replayed",
                                       labels=["service"])
        sagas = GaugeMetricFamily("tillstream_sagas", "Saga instances by status", labels=["service", "status"])
        saga_age = GaugeMetricFamily("tillstream_saga_oldest_in_progress_age_seconds",
                                     "Age of the oldest saga still running or compensating (0: none)",
                                     labels=["service"])
        pool_size = GaugeMetricFamily("tillstream_db_pool_size", "Connections open in the service's pool",
                                      labels=["service"])
        pool_in_use = GaugeMetricFamily("tillstream_db_pool_in_use", "Connections of the pool in use",
                                        labels=["service"])
        pool_max = GaugeMetricFamily("tillstream_db_pool_max", "The pool's limit (DB_POOL_MAX)", labels=["service"])
        age = GaugeMetricFamily("tillstream_health_sample_age_seconds",
                                "Seconds since the gauges above were last measured")
        if snapshot is not None:
            for row in snapshot.lag:
                lag.add_metric([row.group, row.topic, str(row.partition)], row.lag)
            for service, figures in snapshot.outbox.items():
                backlog.add_metric([service], figures["unpublished"])
                oldest.add_metric([service], figures["oldest_age_s"])
                parked.add_metric([service], figures["parked"])
            for service, figures in snapshot.dead_letters.items():
                held.add_metric([service], figures["held"])
                unreplayed.add_metric([service], figures["unreplayed"])
            for service, figures in snapshot.sagas.items():
                for status in SAGA_STATES:
                    sagas.add_metric([service, status], figures.get(status, 0))
                saga_age.add_metric([service], figures["oldest_age_s"])
            for service, running in (hosted or {}).items():
                size, idle = running.pool.get_size(), running.pool.get_idle_size()
                pool_size.add_metric([service], size)
                pool_in_use.add_metric([service], size - idle)
                pool_max.add_metric([service], running.pool.get_max_size())
            if snapshot.taken_at is not None:
                age.add_metric([], max(time.time() - snapshot.taken_at, 0.0))
        yield from (lag, backlog, oldest, parked, held, unreplayed, sagas, saga_age, pool_size, pool_in_use,
                    pool_max, age)


async def _database_figures(pool: asyncpg.Pool) -> tuple[dict, dict, dict]:
    """One round trip for a schema's outbox, dead letters and sagas (the pool's search path is
    its schema). The outbox's rows are the unpublished ones, and for OUTBOX_FLUSH_MS or so
    those just published (shared/outbox.py deletes them in batches). The saga counts read the
    whole table, which keeps every ended saga: a sequential scan of small rows, milliseconds
    for hundreds of thousands."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM outbox WHERE parked_at IS NULL) AS unpublished,"
        " (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox WHERE parked_at IS NULL)"
        "  AS outbox_age,"
        " (SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL) AS parked,"
        " (SELECT count(*) FROM dead_letters) AS held,"
        " (SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL) AS unreplayed,"
        " (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM"
        "  (SELECT status, count(*) AS n FROM sagas GROUP BY status) s) AS sagas,"
        " (SELECT coalesce(extract(epoch FROM now() - min(started_at)), 0) FROM sagas"
        "  WHERE status IN ('running', 'compensating')) AS saga_age")
    sagas = {status: int(n) for status, n in row["sagas"].items()}
    return ({"unpublished": row["unpublished"], "oldest_age_s": float(row["outbox_age"]), "parked": row["parked"]},
            {"held": row["held"], "unreplayed": row["unreplayed"]},
            {**sagas, "oldest_age_s": float(row["saga_age"])})


HEALTH = HealthSampler()
REGISTRY.register(HEALTH)
