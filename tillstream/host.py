"""One Tillstream process, the default topology (`make run`): the gateway, the four services
with their consumers and outbox relays, and the completion saga, the gateway calling the
services in-process (`rpc.local` of each service's operations: shared/rpc.py). Each service
keeps its bounded context (schema, event stream, outbox, topic, consumer groups); state still
crosses between services as events on Kafka.

`uvicorn --factory tillstream.host:create_app`. The public port serves the API; the
internal listener (`TILLSTREAM_INTERNAL_LISTEN`, shared/internal.py) answers `/readyz`,
`/metrics` and each hosted service's operations at `/services/<service>/bus/<operation>`, as a
service alone answers them at `/bus/<operation>`, to callers whose key's scope holds them
(loading reference data; another gateway using these services over HTTP).
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request

import shared.contracts  # noqa: F401  (registers every event type)
from services.cart.api import CartService
from services.cart.app import definition as cart
from services.gateway.app import create_gateway
from services.gateway.services import Services
from services.order.api import OrderService
from services.order.app import definition as order
from services.payment.api import PaymentService
from services.payment.app import definition as payment
from services.shipping.api import ShippingService
from services.shipping.app import definition as shipping
from shared import rpc, safety
from shared.health import HEALTH
from shared.http_app import create_internal_app
from shared.internal import answer_bus_call
from shared.logs import configure_logging
from shared.recycle import BrokerRecycler
from shared.service import ServiceRuntime, freeze_startup_objects, project_inline_where_hosted
from shared.settings import Settings, load_settings

DEFINITIONS = (cart, order, shipping, payment)
log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging("tillstream", settings.log_level)
    safety.check_process(settings)
    for definition in DEFINITIONS:
        if definition.check_settings is not None:
            definition.check_settings(settings)
    runtimes = {definition.name: ServiceRuntime(definition, settings) for definition in DEFINITIONS}
    # The hosted services as the gateway and the bus routes call them, once started.
    hosted: dict[str, object] = {}

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
            # A service that calls others starts once they have: it is given them in-process.
            for runtime in sorted(runtimes.values(), key=lambda r: bool(r.definition.peers)):
                await runtime.start({name: rpc.local(interface, runtimes[name].operations)
                                     for name, interface in runtime.definition.peers.items()})
                started.append(runtime)
            # Once every schema is migrated: until then the consumers carry what is appended.
            log.info("inline projections", extra={"fields": {"wired": project_inline_where_hosted(started)}})
            # Every service is here: calls and inline projections apply each event as it is
            # stored, so the consumers are the backstop (a lost reply, a crash) and need not
            # fetch every few messages as they come.
            for runtime in started:
                for consumer in runtime.consumers:
                    consumer.pace(settings.backstop_consumer_pace_ms)
                if runtime.relay is not None:  # no request waits for what it publishes either
                    runtime.relay.linger(settings.one_process_outbox_linger_ms)
            services = Services(cart=rpc.local(CartService, runtimes[cart.name].operations),
                                order=rpc.local(OrderService, runtimes[order.name].operations),
                                shipping=rpc.local(ShippingService, runtimes[shipping.name].operations),
                                payment=rpc.local(PaymentService, runtimes[payment.name].operations))
            hosted.update({cart.name: services.cart, order.name: services.order, shipping.name: services.shipping,
                           payment.name: services.payment})
            app.state.services = services
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
        runtime = runtimes.get(service)
        return await answer_bus_call(request, settings, service, runtime.definition.interface if runtime else None,
                                     hosted.get(service), operation)

    # The services the gateway calls exist once they have started (the lifespan sets them).
    return create_gateway(None, internal, lifespan=lifespan, internal_listen=settings.internal_listen)
