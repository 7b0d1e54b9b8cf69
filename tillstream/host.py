"""One Tillstream process, the default topology (`make run`): the gateway, the four services
with their consumers and outbox relays, and the completion saga, the command bus calling
the services in-process. Each service keeps its bounded context (schema, event stream,
outbox, topic, consumer groups); state still crosses between services as events on Kafka.

`uvicorn --factory tillstream.host:create_app`. Besides the public API it answers, for
holders of the service credential, each hosted service's operations at
`/services/<service>/bus/<operation>`, as a service alone answers them at `/bus/<operation>`
(loading reference data; another gateway using these services over HTTP).
"""
from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

import shared.contracts  # noqa: F401  (registers every event type)
from services.cart.app import definition as cart
from services.gateway.app import create_gateway
from services.order.app import definition as order
from services.payment.app import definition as payment
from services.shipping.app import definition as shipping
from shared.commandbus import SERVICE_KEY_HEADER, CommandBus, LocalService, check_service_key
from shared.errors import DomainError
from shared.health import HEALTH
from shared.jsonutil import json_response
from shared.logs import configure_logging
from shared.recycle import BrokerRecycler
from shared.service import ServiceRuntime, freeze_startup_objects
from shared.settings import Settings, load_settings

DEFINITIONS = (cart, order, shipping, payment)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging("tillstream", settings.log_level)
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

    app = create_gateway(bus, readiness, lifespan=lifespan)

    @app.post("/services/{service}/bus/{operation}", include_in_schema=False)
    async def operation(service: str, operation: str, request: Request):
        if not check_service_key(settings.service_key, request.headers.get(SERVICE_KEY_HEADER)):
            return JSONResponse({"code": "unauthorized", "message": "a service credential is required",
                                 "details": {}}, status_code=401)
        if service not in bus.local:
            return JSONResponse({"code": "not_found", "message": "no such service", "details": {}}, status_code=404)
        try:
            return json_response(await bus.call(service, operation, **json.loads(await request.body() or b"{}")))
        except DomainError as refusal:
            return JSONResponse({"code": refusal.code, "message": refusal.message, "details": refusal.details},
                                status_code=refusal.status)

    return app
