"""The gateway: the public dialects (Solidus under /api, GetCandy under /api/v1) over the
services' typed interfaces (services/gateway/services.py, shared/rpc.py).

`create_gateway(services, internal)` is the app, whatever hosts it: tillstream/host.py serves
it with the four services in the same process (`rpc.local`: called in-process, the default);
alone (`uvicorn --factory services.gateway.app:create_app`, the distributed topology) it
calls the services over HTTP (`rpc.remote`) at CART_URL, ORDER_URL, SHIPPING_URL and
PAYMENT_URL, with the gateway's own key. The public port serves the dialects, the API docs and `/healthz`;
`/readyz` and `/metrics` answer on `internal`, the internal listener (shared/internal.py).
"""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from services.gateway import getcandy, openapi, solidus
from services.gateway.admission import AdmissionControl, error_body
from services.gateway.getcandy.errors import GetCandyError
from services.gateway.getcandy.errors import error as getcandy_error
from services.gateway.getcandy.ids import id_secret
from services.gateway.input_filter import InputFilter
from services.gateway.order_access import OrderAccessCache
from services.gateway.services import Services
from services.gateway.solidus.errors import NOT_FOUND, ApiError
from shared import context
from shared.contracts import SERVICES
from shared.http_app import create_internal_app, install_common
from shared.internal import serving_internally
from shared.logs import log_fields, route_template
from shared.rpc import ServiceUnavailable
from shared.settings import load_settings, service_urls
from shared.validation import MAX_BODY_BYTES

log = logging.getLogger("tillstream.gateway")
UNAVAILABLE = "A service is temporarily unavailable; please retry."


def create_gateway(services: Services | None, internal: FastAPI, *, lifespan=None,
                   internal_listen: str | None = None) -> FastAPI:
    id_secret()  # fails closed: no GetCandy id can be issued or checked without the install's secret
    listen = internal_listen or load_settings().internal_listen
    app = FastAPI(title="Tillstream", lifespan=serving_internally(internal, listen, lifespan), docs_url=None,
                  redoc_url=None)
    openapi.install(app)
    # None: the host's lifespan sets them once the services it hosts have started.
    app.state.services = services
    app.state.order_access = OrderAccessCache(load_settings().gateway_order_access_entries)
    # Added before install_common, so the request context (access log, latency metrics) wraps
    # it and a request's time waiting for admission counts in its latency.
    app.add_middleware(AdmissionControl, limit=int(os.environ.get("GATEWAY_MAX_IN_FLIGHT", "8")),
                       queue_timeout_s=int(os.environ.get("GATEWAY_QUEUE_TIMEOUT_MS", "10000")) / 1000)
    # Outside admission: a request refused for its text never takes a slot.
    app.add_middleware(InputFilter)
    # Outside both, the body guard reads each body whole and bounded (shared/http_limits.py).
    install_common(app, "gateway", render=error_body, max_body_bytes=MAX_BODY_BYTES, capped_prefix="/api")
    app.include_router(solidus.router)
    app.include_router(getcandy.router)

    @app.exception_handler(ApiError)
    async def solidus_error(request: Request, exc: ApiError):
        if isinstance(exc.body, str):
            return PlainTextResponse(exc.body, status_code=exc.status)
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(GetCandyError)
    async def candy_error(request: Request, exc: GetCandyError):
        return JSONResponse(exc.body, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def bad_path(request: Request, exc: RequestValidationError):
        # Only path parameters are validated by FastAPI here (bodies are read by each
        # dialect), and a malformed id names no resource.
        if request.url.path.startswith("/api/v1/"):
            return JSONResponse(getcandy_error(404, "Resource not found").body, status_code=404)
        return JSONResponse(NOT_FOUND, status_code=404)

    @app.exception_handler(ServiceUnavailable)
    async def service_unreachable(request: Request, exc: ServiceUnavailable):
        """An outage is a 503 the client may retry, never a 401 or 404 that would mislead it."""
        log.warning("service call failed", extra=log_fields(route=route_template(request.scope), error=repr(exc)))
        body = (getcandy_error(503, UNAVAILABLE).body if request.url.path.startswith("/api/v1/")
                else {"error": UNAVAILABLE})
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        """The last resort: never a bare 500. The dialect's body names the request's id, under
        which the failure is logged (the fuzzing in the suite finds none)."""
        reference = context.current_correlation_id()
        log.error("unexpected failure", exc_info=exc,
                  extra=log_fields(route=route_template(request.scope), reference=reference))
        message = f"Something went wrong on our side (reference {reference})."
        body = (getcandy_error(500, message).body if request.url.path.startswith("/api/v1/") else {"error": message})
        return JSONResponse(body, status_code=500, headers={"X-Request-Id": reference})

    return app


def create_app() -> FastAPI:
    """The gateway alone in its process: every operation is an HTTP call to its service."""
    from shared import safety
    from shared.health import HEALTH
    from shared.logs import configure_logging
    from shared.service import freeze_startup_objects

    settings = load_settings()
    configure_logging("gateway", settings.log_level)
    safety.check_process(settings)
    from services.cart.api import CartService
    from services.order.api import OrderService
    from services.payment.api import PaymentService
    from services.shipping.api import ShippingService
    from shared import rpc

    urls = service_urls(SERVICES)
    transport = rpc.Transport(settings.gateway_key)
    services = Services(cart=rpc.remote(CartService, urls["cart"], settings.gateway_key, transport=transport),
                        order=rpc.remote(OrderService, urls["order"], settings.gateway_key, transport=transport),
                        shipping=rpc.remote(ShippingService, urls["shipping"], settings.gateway_key,
                                            transport=transport),
                        payment=rpc.remote(PaymentService, urls["payment"], settings.gateway_key,
                                           transport=transport))

    async def services_ready() -> dict[str, bool]:
        checks = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            for instances in urls.values():
                for url in instances:
                    try:
                        async with session.get(f"{url}/readyz") as response:
                            checks[url] = response.status == 200
                    except (aiohttp.ClientError, TimeoutError):
                        checks[url] = False
        return checks

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The services report their own groups; the gateway every group on the broker.
        HEALTH.attach(settings, every_group=True)
        freeze_startup_objects()
        try:
            yield
        finally:
            await HEALTH.detach()
            await services.close()

    return create_gateway(services, create_internal_app("gateway", services_ready), lifespan=lifespan)
