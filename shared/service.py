"""Builds a service process: FastAPI app + PostgreSQL schema + outbox relay + consumers.

Every service is created the same way (see services/*/app.py), so each one has
/healthz, /readyz, /metrics, request-id propagation and JSON logs without writing them.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import asyncpg
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import context, db, metrics
from shared.aggregate import DomainError
from shared.bus import ensure_topics, events_topic, make_producer
from shared.consumer import EventConsumer, Handler
from shared.envelope import DomainEvent
from shared.eventstore import EventStore
from shared.logs import configure_logging, log_fields
from shared.outbox import OutboxRelay
from shared.settings import Settings, load_settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("tillstream.access")
_QUIET_ROUTES = {"/healthz", "/readyz", "/metrics"}


@dataclass
class Subscription:
    """A consumer group of this service: `<service>.<name>` reads `topics` into `handler`."""
    name: str
    topics: list[str]
    handler: Handler
    # The event contracts the handler acts on (None: every event of the topics).
    event_types: tuple[type[DomainEvent], ...] | None = None
    # No request waits for what the handler does, so its consumer fetches less often
    # (KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS instead of KAFKA_FETCH_MAX_WAIT_MS).
    background: bool = False


@dataclass
class ServiceDefinition:
    name: str
    router: APIRouter
    migrations: Path | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    # Called with the app once its pool exists, before consumers start (e.g. to wire a gateway).
    on_start: Callable[[FastAPI], None] | None = None

    @property
    def schema(self) -> str:
        return self.name

    @property
    def topic(self) -> str:
        return events_topic(self.name)


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


def create_service(definition: ServiceDefinition, settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(definition.name, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        dsn = settings.require_database_url()
        await db.migrate(dsn, definition.schema, definition.migrations)
        await ensure_topics(settings, sorted({definition.topic, *(t for s in definition.subscriptions for t in s.topics)}))
        pool = await db.create_pool(settings, definition.schema)
        producer = make_producer(settings)
        await producer.start()
        relay = OutboxRelay(settings, definition.schema, producer)
        store = EventStore(definition.schema, definition.topic)
        consumers = [
            EventConsumer(settings=settings, pool=pool, producer=producer,
                          group_id=f"{definition.name}.{s.name}", topics=s.topics, handler=s.handler,
                          event_types=s.event_types, background=s.background, notices=store)
            for s in definition.subscriptions
        ]
        app.state.settings = settings
        app.state.pool = pool
        app.state.store = store
        app.state.producer = producer
        app.state.consumers = consumers
        if definition.on_start is not None:
            definition.on_start(app)
        tasks = [asyncio.create_task(_supervise("outbox-relay", relay.run))]
        tasks += [asyncio.create_task(_supervise(c.group_id, c.run)) for c in consumers]
        freeze_startup_objects()
        log.info("service started", extra={"fields": {"schema": definition.schema}})
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await producer.stop()
            await pool.close()

    app = FastAPI(title=f"tillstream-{definition.name}", lifespan=lifespan)
    install_common(app, definition.name)

    @app.get("/readyz")
    async def readyz(request: Request):
        checks = {"database": False, "consumers": all(c.assigned.is_set() for c in request.app.state.consumers)}
        try:
            checks["database"] = await request.app.state.pool.fetchval("SELECT true", timeout=2)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
            pass
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.exception_handler(OSError)
    @app.exception_handler(asyncpg.PostgresConnectionError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(asyncpg.TooManyConnectionsError)
    async def database_unavailable(request: Request, exc: Exception):
        log.warning("database unavailable", extra={"fields": {"path": request.url.path, "error": repr(exc)}})
        return JSONResponse({"code": "unavailable", "message": "The database is unavailable.", "details": {}},
                            status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError):
        # The internal error shape; the gateway turns it into each dialect's own.
        return JSONResponse({"code": exc.code, "message": exc.message, "details": exc.details},
                            status_code=exc.status)

    app.include_router(definition.router)
    return app


def freeze_startup_objects() -> None:
    """Move everything allocated while starting (modules, FastAPI routes, pydantic models:
    hundreds of thousands of objects that live as long as the process) out of the cyclic
    garbage collector's sight, so its full collections stop rescanning them while serving."""
    gc.collect()
    gc.freeze()


class RequestContext:
    """Request id (→ correlation id of the events a request causes), metrics and the access
    log. Plain ASGI: Starlette's `@app.middleware("http")` runs every request through an
    extra task and memory streams, a cost paid on each of the gateway's internal calls."""

    def __init__(self, app, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None) \
            or context.new_id()
        token = context.correlation_id.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", request_id.encode("latin-1"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.HTTP_REQUESTS.labels(self.service, scope["method"], route, str(status)).observe(elapsed)
            if route not in _QUIET_ROUTES:  # logged under the request's correlation id
                access_log.info("request", extra=log_fields(method=scope["method"], path=scope["path"],
                                                            status=status, ms=round(elapsed * 1000, 2)))
            context.correlation_id.reset(token)


def install_common(app: FastAPI, service: str) -> None:
    """Request ids, metrics and liveness: shared by the services and the gateway."""

    app.add_middleware(RequestContext, service=service)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "service": service}

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
