"""A service in a process: its schema, event store, outbox relay, consumers and background
tasks (`ServiceRuntime`), hosted alone (`create_service`: a FastAPI app answering its bus
route, /healthz, /readyz, /metrics on its one listener, which is internal: shared/internal.py)
or with the others in one process (tillstream/host.py).

Every service is defined the same way (services/*/app.py), so each one has request-id
propagation, metrics and JSON logs without writing them.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared import db, rpc, safety, shutdown
from shared.consumer import EventConsumer
from shared.contracts import SERVICES
from shared.envelope import DomainEvent, EventEnvelope
from shared.errors import DomainError
from shared.eventstore import EventStore
from shared.handler import Handler, IdempotentHandler, Statement, StatementForm
from shared.health import HEALTH, Hosted
from shared.http_app import install_common
from shared.inline import InlineProjection, InlineStatement, project_inline
from shared.internal import answer_bus_call, caller_keys, install_probes
from shared.kafka import ensure_topics, events_topic, make_producer
from shared.logs import configure_logging, log_fields, route_template
from shared.outbox import OutboxRelay
from shared.settings import Settings, load_settings, service_urls
from shared.validation import MAX_BODY_BYTES

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What a service is given in a process once started: from it the service builds its own
    context (`ServiceDefinition.build`), which its operations, handlers and tasks work with."""
    name: str
    settings: Any
    pool: Any
    store: Any
    # The other services it calls, by name: their interfaces, in-process or over HTTP.
    peers: dict[str, Any] = field(default_factory=dict)


# A subscription's handler: given the service's context (bound at start-up by ServiceRuntime,
# so a subscription is declared without a database), the transaction's connection, the event.
ContextHandler = Callable[[Any, asyncpg.Connection, EventEnvelope], Awaitable[None]]
# Its one-statement form (shared/handler.py Statement), given the service's context likewise.
ContextStatement = Callable[[Any, list[EventEnvelope]], Awaitable[Statement | None]]


@dataclass
class Subscription:
    """A consumer group of this service: `<service>.<name>` reads `topics` into `handler`."""
    name: str
    topics: list[str]
    handler: ContextHandler
    # The event contracts the handler acts on (None: every event of the topics).
    event_types: tuple[type[DomainEvent], ...] | None = None
    # No request waits for what the handler does, so its consumer fetches less often
    # (KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS instead of KAFKA_FETCH_MAX_WAIT_MS).
    background: bool = False
    # Applied in the transaction that appends the events, when the producing service shares
    # this process (shared/inline.py InlineProjection); its consumer stays, for the
    # services apart and for whatever an inline application missed.
    inline: bool = False
    # Its one-statement form when applied inline (shared/inline.py InlineStatement): the
    # changes ride in the producer's append statement when it can tell them without reading.
    inline_statement: InlineStatement | None = None
    # The handler's whole work as one statement with its processed-events record, when it can
    # be (shared/handler.py Statement): a delivery then costs that statement, no transaction.
    statement: ContextStatement | None = None


@dataclass
class ServiceDefinition:
    """A bounded context: its operations, schema, event stream and topic, consumer groups,
    and the background work it runs. Hosted alone (`create_service`: its own process) or
    with others (`tillstream/host.py`: one process), the same in both."""
    name: str
    # Its public interface (services/<name>/api.py) and what implements it, built from the
    # service's own context once started (services/<name>/operations.py).
    interface: type
    operations: Callable[[Any], Any]
    migrations: Path | None = None
    # The services whose operations it calls (name: interface), reached with its own key
    # (shared/service_access.py) when they run apart.
    peers: dict[str, type] = field(default_factory=dict)
    subscriptions: list[Subscription] = field(default_factory=list)
    # The service's own context (its repositories, saga runner, payment gateway...), built
    # from what the process gives it once started, before anything uses it: nothing of a
    # service's state exists at import, and two runtimes of a service share none of it.
    # None: the service works with the ServiceContext itself.
    build: Callable[[ServiceContext], Any] | None = None
    # Background loops of the service (e.g. the saga's deadline sweep), given its context.
    tasks: list[Callable[[Any], Awaitable[None]]] = field(default_factory=list)
    # Refuses a start with settings the service cannot run safely with (shared/safety.py).
    check_settings: Callable[[Settings], None] | None = None
    # Topics it publishes to besides its own (the order service's saga commands: `order.saga`).
    other_topics: tuple[str, ...] = ()

    @property
    def schema(self) -> str:
        return self.name

    @property
    def topic(self) -> str:
        return events_topic(self.name)

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic it publishes to: its own first."""
        return (self.topic, *self.other_topics)


def consumer_groups(definition: ServiceDefinition) -> dict[str, list[Subscription]]:
    """The service's Kafka consumer groups: its subscriptions to the same topics at the same
    pace (background or not) share one (`<service>.<name>+<name>`), so each message of those
    topics is fetched once for all of them. On the embedded broker every fetch that finds
    new data lists the batches its partition holds, so a group fewer on a topic is that
    much less of the broker's work (docs/performance.md)."""
    by_topics: dict[tuple, list[Subscription]] = {}
    for subscription in definition.subscriptions:
        by_topics.setdefault((tuple(sorted(subscription.topics)), subscription.background), []).append(subscription)
    return {f"{definition.name}.{'+'.join(s.name for s in subscriptions)}": subscriptions
            for subscriptions in by_topics.values()}


async def _supervise(name: str, make_coro) -> None:
    """Keep a background loop alive: log a crash and start it again after a pause."""
    delay = 0.5
    while True:
        started = time.monotonic()
        try:
            await make_coro()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task crashed; restarting", extra={"fields": {"task": name}})
            if time.monotonic() - started > 60:
                delay = 0.5
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15)


class ServiceRuntime:
    """One service in a process: its pool and event store (its schema), outbox relay,
    consumers and background tasks. `ctx` is what the process gives it, `context` what the
    service built from it (what its operations, handlers and tasks work with); `operations`
    implements its interface (all exist once started)."""

    def __init__(self, definition: ServiceDefinition, settings: Settings) -> None:
        self.definition = definition
        self.settings = settings
        self.ctx: ServiceContext | None = None
        self.context: Any = None
        self.operations: Any = None
        self.consumers: list[EventConsumer] = []
        self.relay: OutboxRelay | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self, peers: dict[str, Any] | None = None) -> ServiceContext:
        """`peers`: the implementations of `definition.peers`, as this service calls them."""
        definition, settings = self.definition, self.settings
        if set(peers or {}) != set(definition.peers):
            raise ValueError(f"{definition.name} calls {sorted(definition.peers)}, given {sorted(peers or {})}")
        await db.migrate(settings.require_database_url(), definition.schema, definition.migrations)
        await ensure_topics(settings, sorted({*definition.topics, *(t for s in definition.subscriptions
                                                                     for t in s.topics)}))
        pool = await db.create_pool(settings, definition.schema)
        self._producer = make_producer(settings)
        await self._producer.start()
        store = EventStore(definition.schema, definition.topic)
        self.ctx = ServiceContext(definition.name, settings, pool, store, peers=dict(peers or {}))
        self.context = self.ctx if definition.build is None else definition.build(self.ctx)
        self.operations = definition.operations(self.context)
        self.consumers = [
            EventConsumer(settings=settings, pool=pool, producer=self._producer, group_id=group,
                          topics=subscriptions[0].topics, background=subscriptions[0].background,
                          wake_on_publish=True, handlers=[
                              IdempotentHandler(settings=settings, pool=pool, producer=self._producer,
                                                name=f"{definition.name}.{s.name}", handler=self.bound(s),
                                                event_types=s.event_types, notices=store,
                                                statement=self.bound_statement(s))
                              for s in subscriptions])
            for group, subscriptions in consumer_groups(definition).items()
        ]
        self.relay = OutboxRelay(settings, definition.schema, self._producer)
        self._tasks = [asyncio.create_task(_supervise(f"{definition.name}.outbox-relay", self.relay.run))]
        self._tasks += [asyncio.create_task(_supervise(c.group_id, c.run)) for c in self.consumers]
        self._tasks += [asyncio.create_task(_supervise(f"{definition.name}.{task.__name__}",
                                                       lambda task=task: task(self.context)))
                        for task in definition.tasks]
        HEALTH.attach(settings, Hosted(definition.name, pool, {c.group_id: c.topics for c in self.consumers}))
        log.info("service started", extra={"fields": {"schema": definition.schema}})
        return self.ctx

    def bound(self, subscription: Subscription) -> Handler:
        """The subscription's handler with this runtime's context (once started)."""
        assert self.context is not None, f"{self.definition.name} is not started"
        return partial(subscription.handler, self.context)

    def bound_inline_statement(self, subscription: Subscription) -> InlineStatement | None:
        statement = subscription.inline_statement
        if statement is None or statement.before is None:
            return statement
        return dataclasses.replace(statement, before=partial(statement.before, self.context))

    def bound_statement(self, subscription: Subscription) -> StatementForm | None:
        """The subscription's one-statement form with this runtime's context, if it has one."""
        if subscription.statement is None:
            return None
        assert self.context is not None, f"{self.definition.name} is not started"
        return partial(subscription.statement, self.context)

    async def stop(self) -> None:
        """Each wait bounded by SHUTDOWN_TIMEOUT_MS (shared/shutdown.py): a stop that hangs
        keeps the process from exiting, so from being restarted."""
        name, timeout_s = self.definition.name, self.settings.shutdown_timeout_s
        await HEALTH.detach(name)
        for task in self._tasks:
            task.cancel()
        await shutdown.bounded(f"{name}.tasks", asyncio.gather(*self._tasks, return_exceptions=True), timeout_s)
        if self._producer is not None:
            await shutdown.bounded(f"{name}.producer", self._producer.stop(), timeout_s)
        close = getattr(self.context, "close", None)  # what the service's context holds open
        if close is not None:
            await shutdown.bounded(f"{name}.context", close(), timeout_s)
        if self.ctx is not None:
            await shutdown.close_pool(self.ctx.pool, timeout_s, f"{name}.pool")

    async def readiness(self) -> dict[str, bool]:
        if self.ctx is None:  # the internal listener answers while the services are starting
            return {"database": False, "consumers": False}
        checks = {"database": False, "consumers": all(c.assigned.is_set() for c in self.consumers)}
        if self.ctx is None:  # not started: no pool to ask
            return checks
        try:
            checks["database"] = bool(await self.ctx.pool.fetchval("SELECT true", timeout=2))
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            pass
        return checks


def create_service(definition: ServiceDefinition, settings: Settings | None = None) -> FastAPI:
    """The service alone in its process (the distributed topology): its operations answer
    `POST /bus/<operation>` to callers whose key's scope holds them (shared/internal.py)."""
    settings = settings or load_settings()
    configure_logging(definition.name, settings.log_level)
    safety.check_process(settings)
    if definition.check_settings is not None:
        definition.check_settings(settings)
    runtime = ServiceRuntime(definition, settings)

    # The services it calls, over HTTP, as the caller it is (its own key).
    urls = service_urls(SERVICES)
    transport = rpc.Transport(caller_keys(settings).get(definition.name, ""))
    peers: dict[str, Any] = {name: rpc.remote(interface, urls[name], transport.key, transport=transport)
             for name, interface in definition.peers.items()}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.ctx = await runtime.start(peers)
        freeze_startup_objects()
        try:
            yield
        finally:
            await runtime.stop()
            await transport.close()

    app = FastAPI(title=f"tillstream-{definition.name}", lifespan=lifespan, openapi_url=None)
    # Bodies bounded before anything else reads them (a caller without a key included).
    install_common(app, definition.name, max_body_bytes=MAX_BODY_BYTES)
    install_probes(app, runtime.readiness)

    @app.post("/bus/{operation}")
    async def bus(operation: str, request: Request):
        return await answer_bus_call(request, settings, definition.name, definition.interface,
                                     runtime.operations, operation)

    async def database_unavailable(request: Request, exc: Exception):
        log.warning("database unavailable", extra=log_fields(route=route_template(request.scope), error=repr(exc)))
        return JSONResponse({"code": "unavailable", "message": "The database is unavailable.", "details": {}},
                            status_code=503, headers={"Retry-After": "1"})

    for outage in db.OUTAGE_ERRORS:
        app.add_exception_handler(outage, database_unavailable)

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        # The internal error shape; shared/rpc.py:remote raises it again on the caller's side.
        return JSONResponse({"code": exc.code, "message": exc.message, "details": exc.details},
                            status_code=exc.status)

    return app


# Net allocations of tracked objects between young collections (CPython's default: 700). In a
# 20 s level of 8 Solidus flows the one process then ran 728 young collections, 66 middle and 6
# full ones (up to 34 ms each, with the event loop stopped): objects that were merely in flight
# got promoted, and the old generation kept growing past its 25% rule. At 10,000 it ran 16
# young collections (≤ 2.1 ms each) and 1 middle: GC time while serving fell from ~440 to
# ~40 ms (docs/performance.md). The older generations keep CPython's multipliers.
YOUNG_COLLECTION_THRESHOLD = 10_000


def freeze_startup_objects() -> None:
    """Move everything allocated while starting (modules, FastAPI routes, pydantic models:
    hundreds of thousands of objects that live as long as the process) out of the cyclic
    garbage collector's sight, so its full collections stop rescanning them while serving;
    and collect the young generation less often (YOUNG_COLLECTION_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)


def project_inline_where_hosted(runtimes: list[ServiceRuntime] | tuple[ServiceRuntime, ...]) -> list[str]:
    """For services sharing a process (started): each `inline` subscription to another hosted
    service's topic is applied in that service's appends (shared/eventstore.py), with the
    subscriber's context. Returns what was wired, as `<consumer> <- <store>`."""
    by_topic = {runtime.definition.topic: runtime.definition for runtime in runtimes}
    wired = []
    for runtime in runtimes:
        definition = runtime.definition
        for subscription in definition.subscriptions:
            if not subscription.inline:
                continue
            for topic in subscription.topics:
                producer = by_topic.get(topic)
                if producer is None or producer is definition:
                    continue
                consumer = f"{definition.name}.{subscription.name}"
                types = subscription.event_types
                project_inline(producer.schema, InlineProjection(
                    consumer=consumer, schema=definition.schema, handler=runtime.bound(subscription),
                    event_types=None if types is None else frozenset(t.event_type for t in types),
                    statement=runtime.bound_inline_statement(subscription)))
                wired.append(f"{consumer} <- {producer.schema}")
    return wired

