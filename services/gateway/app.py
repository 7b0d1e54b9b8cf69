"""The gateway process: `uvicorn services.gateway.app:app` (http://127.0.0.1:8000)."""
from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from shared.logs import configure_logging, log_fields
from shared.service import freeze_startup_objects, install_common
from shared.settings import load_settings
from services.gateway import getcandy, solidus, solidus_checkout
from services.gateway.admission import AdmissionControl
from services.gateway.clients import SERVICES, ServiceClients, ServiceUnavailable
from services.gateway.getcandy_ids import id_secret

configure_logging("gateway", load_settings().log_level)
log = logging.getLogger("tillstream.gateway")


@asynccontextmanager
async def lifespan(app: FastAPI):
    id_secret()  # fails closed: no GetCandy id can be issued or checked without the install's secret
    app.state.services = ServiceClients.create()
    freeze_startup_objects()
    try:
        yield
    finally:
        await app.state.services.close()


app = FastAPI(title="tillstream-gateway", lifespan=lifespan)
# Added before install_common, so the request context (access log, latency metrics) wraps
# it and a request's time waiting for admission counts in its latency.
app.add_middleware(AdmissionControl, limit=int(os.environ.get("GATEWAY_MAX_IN_FLIGHT", "8")),
                   queue_timeout_s=int(os.environ.get("GATEWAY_QUEUE_TIMEOUT_MS", "10000")) / 1000)
install_common(app, "gateway")
app.include_router(solidus.router)
app.include_router(solidus_checkout.router)
app.include_router(getcandy.router)


@app.exception_handler(solidus.ApiError)
async def api_error(request: Request, exc: solidus.ApiError):
    if isinstance(exc.body, str):
        return PlainTextResponse(exc.body, status_code=exc.status)
    return JSONResponse(exc.body, status_code=exc.status)


@app.exception_handler(getcandy.GetCandyError)
async def getcandy_error(request: Request, exc: getcandy.GetCandyError):
    return JSONResponse(exc.body, status_code=exc.status)


@app.exception_handler(RequestValidationError)
async def bad_path(request: Request, exc: RequestValidationError):
    # Only path parameters are validated by FastAPI here (bodies are parsed by hand), and
    # a malformed id names no resource.
    if request.url.path.startswith("/api/v1/"):
        return JSONResponse(getcandy.not_found().body, status_code=404)
    return JSONResponse(solidus.NOT_FOUND, status_code=404)


UNAVAILABLE = "A service is temporarily unavailable; please retry."


@app.exception_handler(ServiceUnavailable)
async def service_unreachable(request: Request, exc: ServiceUnavailable):
    """An outage is a 503 the client may retry, never a 401 or 404 that would mislead it."""
    log.warning("service call failed", extra=log_fields(path=request.url.path, error=repr(exc)))
    body = getcandy.error(503, UNAVAILABLE).body if request.url.path.startswith("/api/v1/") else {"error": UNAVAILABLE}
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


@app.get("/readyz")
async def readyz(request: Request):
    checks = {}
    for name in SERVICES:
        try:
            checks[name] = (await request.app.state.services.call(name, "GET", "/readyz", timeout=2)).status_code == 200
        except ServiceUnavailable:
            checks[name] = False
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
