"""The internal listener: what only the system itself and its operators reach.

The services' operations (`/services/<service>/bus/<operation>` in one process, `/bus/<operation>` in a
service alone: shared/rpc.py), `/metrics` and `/readyz` answer here, never on the public port, which keeps
`/api`, `/api/v1`, the API docs and the `/healthz` liveness probe. The listener is a second
uvicorn server in the same process, on `TILLSTREAM_INTERNAL_LISTEN` (loopback by default),
started and stopped by the public app's lifespan. A service hosted alone has no public
surface: its one listener is internal (bind it to loopback or a private network).

Every bus call is held to the public API's bounds (body 1 MiB: 413; JSON nesting 32 levels,
malformed JSON, arguments the operation does not take: 400) and to its caller's scope
(shared/service_access.py: no key or a wrong one 401, an operation outside the caller's
scope 403, without saying whether it exists).
"""
from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Awaitable, Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared import rpc, shutdown
from shared.errors import DomainError
from shared.http_server import guarded_protocol
from shared.jsonutil import json_response
from shared.service_access import GATEWAY, OPERATOR, ORDER, SERVICE_KEY_HEADER, caller_of, may_call
from shared.settings import Settings, load_settings
from shared.validation import MAX_BODY_BYTES, BadJson, has_forbidden_text, parse_json_object

log = logging.getLogger(__name__)
Readiness = Callable[[], Awaitable[dict[str, bool]]]


def listen_address(value: str) -> tuple[str, int]:
    """`host:port` (`[::1]:port` for IPv6)."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"tillstream: TILLSTREAM_INTERNAL_LISTEN must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


class _Server(uvicorn.Server):
    """The public server owns the process's signals; this one stops when the lifespan ends."""

    @contextmanager
    def capture_signals(self):
        yield


class InternalListener:
    def __init__(self, app: FastAPI, listen: str) -> None:
        self.app = app
        self.host, self.port = listen_address(listen)
        self._server: _Server | None = None
        self._task: asyncio.Task | None = None
        self.shutdown_timeout_s = load_settings().shutdown_timeout_s

    async def start(self) -> None:
        # Bound here, so a port already taken fails the start-up instead of a background task.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise SystemExit(f"tillstream: the internal listener cannot bind {self.host}:{self.port}: {exc}") from None
        # log_config=None: the process's JSON logging stays as configured (shared/logs.py).
        # The same connection bounds as the public port (header deadline, connection count).
        self._server = _Server(uvicorn.Config(self.app, lifespan="off", log_config=None, access_log=False,
                                              http=guarded_protocol(),
                                              timeout_graceful_shutdown=shutdown.whole_seconds(self.shutdown_timeout_s)))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        log.info("internal listener started", extra={"fields": {"listen": f"{self.host}:{self.port}"}})

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await shutdown.bounded("internal listener", asyncio.gather(self._task, return_exceptions=True),
                                   2 * self.shutdown_timeout_s)


def serving_internally(internal: FastAPI, listen: str, lifespan=None):
    """`lifespan` with the internal listener running around it: up before the services start
    (so readiness answers 503 rather than nothing), down after they stop."""

    @asynccontextmanager
    async def wrapped(app: FastAPI):
        listener = InternalListener(internal, listen)
        await listener.start()
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            await listener.stop()

    return wrapped


def install_probes(app: FastAPI, readiness: Readiness) -> None:
    """`/readyz` (every check true: 200, else 503) and `/metrics` (Prometheus)."""

    @app.get("/readyz")
    async def readyz():
        checks = await readiness()
        ready = all(checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def caller_keys(settings: Settings) -> dict[str, str]:
    return {GATEWAY: settings.gateway_key, OPERATOR: settings.operator_key, ORDER: settings.order_key}


def _refusal(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": {}}, status_code=status)


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None past MAX_BODY_BYTES (read no further than that)."""
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_BODY_BYTES:
            return None
    return bytes(received)


async def answer_bus_call(request: Request, settings: Settings, service: str, interface: type | None,
                          target: Any, operation: str) -> Response:
    """One operation of `interface` (a service's Protocol) called over HTTP on `target` (its
    implementation, or an in-process proxy of it: shared/rpc.py): the caller's key and scope,
    then the same bounds as the public API, then the operation, if the Protocol has it; a
    refusal in the internal error shape."""
    caller = caller_of(caller_keys(settings), request.headers.get(SERVICE_KEY_HEADER))
    if caller is None:
        return _refusal(401, "unauthorized", "a service credential is required")
    if not may_call(caller, service, operation):
        return _refusal(403, "forbidden", "this credential may not call that operation")
    if interface is None or target is None:
        return JSONResponse({"code": "unavailable", "message": f"{service} is not running here", "details": {}},
                            status_code=503, headers={"Retry-After": "1"})
    raw = await _bounded_body(request)
    if raw is None:
        return _refusal(413, "too_large", f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    try:
        arguments = parse_json_object(raw) if raw.strip() else {}
    except BadJson as refusal:
        return _refusal(400, "bad_request", str(refusal))
    if has_forbidden_text(arguments):
        return _refusal(400, "bad_request", "A text holds a control character or an unpaired surrogate.")
    function = rpc.method(interface, target, operation)
    if function is None:
        return _refusal(404, "unknown_operation", f"{service} has no operation {operation!r}")
    try:
        rpc.signature(interface, operation).bind(**arguments)
    except TypeError:
        return _refusal(400, "bad_arguments", f"{operation} does not take these arguments")
    try:
        return json_response(rpc.jsonable(await function(**arguments)))
    except DomainError as refusal:
        return JSONResponse({"code": refusal.code, "message": refusal.message, "details": refusal.details},
                            status_code=refusal.status)
