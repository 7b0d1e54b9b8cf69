"""One Tillstream process, the default topology (`make run`): the gateway, the four services
with their consumers and outbox relays, and the completion saga, the command bus calling
the services in-process. Each service keeps its bounded context (schema, event stream,
outbox, topic, consumer groups); state still crosses between services as events on Kafka.

`uvicorn --factory tillstream.host:create_app`. The public port serves the API; the
internal listener (`TILLSTREAM_INTERNAL_LISTEN`, shared/internal.py) answers `/readyz`,
`/metrics` and each hosted service's operations at `/services/<service>/bus/<operation>`, as a
service alone answers them at `/bus/<operation>`, to callers whose key's scope holds them
(loading reference data; another gateway using these services over HTTP).
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

import shared.contracts  # noqa: F401  (registers every event type)
from services.cart.app import definition as cart
from services.gateway.app import create_gateway
from services.order.app import definition as order
from services.payment.app import definition as payment
from services.shipping.app import definition as shipping
from shared import safety
from shared.commandbus import CommandBus, LocalService
from shared.health import HEALTH
from shared.internal import answer_bus_call
from shared.logs import configure_logging
from shared.recycle import BrokerRecycler
from shared.service import ServiceRuntime, create_internal_app, freeze_startup_objects
from shared.settings import Settings, load_settings

DEFINITIONS = (cart, order, shipping, payment)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging("tillstream", settings.log_level)
    safety.check_process(settings)
    for definition in DEFINITIONS:
        if definition.check_settings is not None:
            definition.check_settings(settings)
    runtimes = {definition.name: ServiceRuntime(definition, settings) for definition in DEFINITIONS}
    bus = CommandBus()

    async def readiness() -> dict[str, bool]:
        checks = {}
        for name, runtime in runtimes.items():
            checks |= {f"{name}.{check}": ok for check, ok in (await runtime.readiness()).items()}
        return checks

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        started = []
        recycling = None
        try:
            for name, runtime in runtimes.items():
                bus.local[name] = LocalService(runtime.definition.api, await runtime.start())
                started.append(runtime)
            HEALTH.attach(settings, every_group=True)  # subscribers' groups too (shared/health.py)
            if settings.broker_recycle_after_messages > 0:
                recycling = asyncio.create_task(BrokerRecycler(settings, started).run())
            freeze_startup_objects()
            yield
        finally:
            await HEALTH.detach()
            if recycling is not None:
                recycling.cancel()
                await asyncio.gather(recycling, return_exceptions=True)
            for runtime in reversed(started):
                await runtime.stop()

    internal = create_internal_app("tillstream", readiness)

    @internal.post("/services/{service}/bus/{operation}")
    async def operation(service: str, operation: str, request: Request):
        hosted = bus.local.get(service)
        return await answer_bus_call(request, settings, service, hosted.api if hosted else None, operation,
                                     lambda name, arguments: bus.call(service, name, **arguments))

    return create_gateway(bus, internal, lifespan=lifespan, internal_listen=settings.internal_listen)
