"""The saga worker: a faust-streaming process of the order service that runs the
completion saga (services/order/saga.py) with the generic runner (shared/saga.py).

It consumes the participants' topics (`cart.events`, `shipping.events`, `payment.events`;
consumer group `order-saga`, handled as `order.saga`) and passes each answer to the runner,
and every SAGA_SWEEP_INTERVAL_MS it runs the instances whose deadline has passed. Its
state lives in PostgreSQL, never in the worker: an instance and the commands it sends
change in the transaction that records the answer as processed, so kill -9 at any point
and a restart (or another instance) carries on from the last committed step; deadlines
are rows, so they survive too. Poison messages go to `<topic>.dlq` through the same
handler as every consumer.

Run: `python -m services.order.saga_worker` (SAGA_PORT serves /healthz and /readyz).
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import faust
import faust.transport.drivers.aiokafka as _faust_aiokafka

import shared.contracts  # noqa: F401
from shared import db
from shared.bus import ensure_topics, events_topic, make_producer
from shared.consumer import EventConsumer
from shared.logs import configure_logging
from shared.settings import load_settings
from services.order.commands import COMPLETION_RUNNER, ORDER_STORE
from services.order.consumers import on_saga_answer

settings = load_settings()
configure_logging("order-saga", settings.log_level)
log = logging.getLogger("tillstream.saga")


def _with_our_fetch_wait(create):
    """faust builds its aiokafka consumer with fetch_max_wait_ms=1500 and no setting for
    it. The embedded broker does not answer a waiting fetch when data arrives, so that
    alone made every saga step wait ~0.7 s on average; use KAFKA_FETCH_MAX_WAIT_MS."""
    def create_consumer(self, transport):
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = settings.kafka_fetch_max_wait_ms
        return consumer
    return create_consumer


_faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _with_our_fetch_wait(
    _faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer)
SAGA_TOPICS = [events_topic(participant) for participant in COMPLETION_RUNNER.saga.participants]
MIGRATIONS = Path(__file__).parent / "migrations"

app = faust.App(
    "order-saga",
    broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
    # Measured on the embedded broker: a first group join takes 3 s with these, 30 s without.
    broker_rebalance_timeout=settings.kafka_rebalance_timeout_ms / 1000,
    broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
    broker_heartbeat_interval=settings.kafka_heartbeat_interval_ms / 1000,
    consumer_max_fetch_size=1024 * 1024,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=100,
    broker_commit_interval=0.5,
    topic_partitions=settings.kafka_topic_partitions,
    topic_replication_factor=settings.kafka_replication_factor,
    producer_acks=-1,
    store="memory://",
    datadir=os.environ.get("SAGA_DATA_DIR", "/tmp/tillstream-order-saga"),
    web_enabled=True,
    web_bind="127.0.0.1" if "SAGA_BIND_ALL" not in os.environ else "0.0.0.0",
    web_port=int(os.environ.get("SAGA_PORT", "8105")),
    web_in_thread=False,
)
saga_topic = app.topic(*SAGA_TOPICS, value_serializer="raw", key_serializer="raw", acks=True)


@dataclass
class Record:
    """What the platform's handler reads of a message (the shape of aiokafka's record)."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list


class Runtime:
    """PostgreSQL pool and DLQ producer, created once the worker starts."""

    def __init__(self) -> None:
        self.handler: EventConsumer | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        async with self._lock:
            if self.handler is not None:
                await self.handler.producer.stop()
                await self.handler.pool.close()
                self.handler = None

    async def ready(self) -> EventConsumer:
        async with self._lock:
            if self.handler is None:
                dsn = settings.require_database_url()
                await db.migrate(dsn, "order", MIGRATIONS)
                await ensure_topics(settings, SAGA_TOPICS)
                pool = await db.create_pool(settings, "order")
                producer = make_producer(settings)
                await producer.start()
                self.handler = EventConsumer(settings=settings, pool=pool, producer=producer,
                                             group_id="order.saga", topics=SAGA_TOPICS, handler=on_saga_answer,
                                             event_types=COMPLETION_RUNNER.saga.listens_to(),
                                             notices=ORDER_STORE)
        return self.handler


runtime = Runtime()


@app.task
async def start_runtime() -> None:
    await runtime.ready()


@app.on_before_shutdown.connect
async def close_runtime(app, **kwargs) -> None:
    # After the agents have stopped (faust stops its consumer first): nothing uses them now.
    await runtime.close()


# Steps of different orders run side by side; one order's steps are causally sequential
# (each answers the step before), and a step is idempotent and guarded by the aggregate's
# optimistic concurrency, so the order in which faust hands them over does not matter.
@app.agent(saga_topic, concurrency=settings.saga_concurrency)
async def advance_saga(stream):
    async for event in stream.events():
        message = event.message
        headers = list(message.headers.items()) if isinstance(message.headers, dict) else list(message.headers or [])
        handler = await runtime.ready()
        await handler.handle_message(Record(message.topic, message.partition, message.offset, message.key,
                                            message.value, headers))


@app.timer(interval=settings.saga_sweep_interval_ms / 1000)
async def run_expired_steps() -> None:
    """Deadlines: steps not answered in time are compensated (any worker may take any)."""
    handler = await runtime.ready()
    try:
        await COMPLETION_RUNNER.sweep(handler.pool)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("saga sweep failed; retrying", extra={"fields": {"error": repr(exc)}})


@app.page("/healthz")
async def healthz(web, request):
    return web.json({"status": "ok", "service": "order-saga"})


@app.page("/readyz")
async def readyz(web, request):
    assigned = bool(app.consumer.assignment()) if app.consumer else False
    ready = runtime.handler is not None and assigned
    return web.json({"ready": ready, "checks": {"database": runtime.handler is not None, "consumers": assigned}},
                    status=200 if ready else 503)


def main() -> None:
    # uvloop, as the services run on: faust's default asyncio loop costs the saga more CPU.
    sys.argv = [sys.argv[0], "--loop", "uvloop", "worker", "--loglevel", "warn", "--web-port", str(app.conf.web_port)]
    app.main()


if __name__ == "__main__":
    main()
