"""Location-transparent commands and queries (Axon's command bus, pyeventsourcing's runners).

A service offers its application interface as a `ServiceApi`: named operations, each an
`async def operation(ctx, **arguments)`. The gateway calls them through a `CommandBus`,
which dispatches in-process when the service is hosted in the same process and over HTTP
(`POST <service>/bus/<operation>`, with the caller's key: shared/service_access.py) when it is not. Services
never import each other: what crosses is a name, JSON arguments and a JSON answer.

Both ways give the caller the same thing: the answer as JSON values (money as decimal
strings), and a refusal as the service's own `DomainError` (code, message, status, details).
The in-process way only skips the socket and the encoding.
"""
from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Awaitable, Callable

import aiohttp

from shared import context
from shared.db import OUTAGE_ERRORS
from shared.errors import DomainError
from shared.jsonutil import dumps
from shared.service_access import SERVICE_KEY_HEADER

Operation = Callable[..., Awaitable[Any]]
# Generous: under saturation a request should be slow, not fail.
DEFAULT_TIMEOUT_S = 30.0


class ServiceUnavailable(Exception):
    """A service could not be reached, did not answer in time, or failed (5xx): the gateway
    answers 503 with `Retry-After`, in the dialect's shape."""


@dataclass
class ServiceContext:
    """What a service's operations and consumers work with in a process."""
    name: str
    settings: Any
    pool: Any
    store: Any
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the payment gateway


class ServiceApi:
    """A service's operations (its application interface), by name."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.operations: dict[str, Operation] = {}

    def operation(self, function: Operation) -> Operation:
        self.operations[function.__name__] = function
        return function

    async def dispatch(self, ctx: ServiceContext, name: str, arguments: dict[str, Any]) -> Any:
        operation = self.operations.get(name)
        if operation is None:
            raise DomainError("unknown_operation", f"{self.service} has no operation {name!r}", status=404)
        return jsonable(await operation(ctx, **arguments))


def jsonable(value: Any) -> Any:
    """`value` as JSON gives it back: what the HTTP way hands the caller, without the text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


@dataclass
class LocalService:
    api: ServiceApi
    ctx: ServiceContext


class CommandBus:
    """Calls `service.operation(**arguments)`: in-process for the services in `local`, over
    HTTP to `urls` for the others (each answered by `services/<name>`' bus route)."""

    def __init__(self, *, local: dict[str, LocalService] | None = None, urls: dict[str, list[str]] | None = None,
                 service_key: str = "") -> None:
        self.local = local or {}
        self.urls = urls or {}  # a service's instances: each call goes to one of them
        self.service_key = service_key
        self._session: aiohttp.ClientSession | None = None

    def hosts(self, service: str) -> bool:
        return service in self.local

    async def call(self, service: str, operation: str, *, timeout: float | None = None, **arguments: Any) -> Any:
        if service in self.local:
            hosted = self.local[service]
            try:
                return await hosted.api.dispatch(hosted.ctx, operation, arguments)
            except OUTAGE_ERRORS as exc:
                # The same answer as a service apart gives for its database being down (503).
                raise ServiceUnavailable(f"{service}: {exc!r}") from exc
        return await self._call_over_http(service, operation, arguments, timeout)

    async def _call_over_http(self, service: str, operation: str, arguments: dict[str, Any],
                              timeout: float | None) -> Any:
        if service not in self.urls:
            raise ServiceUnavailable(f"{service}: neither hosted here nor given a URL")
        if self._session is None:
            # Idle connections are dropped well before the services' uvicorn closes them
            # (5 s), so a request never races the server closing the connection it reuses.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=2.0),
                timeout=aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT_S))
        headers = {"X-Request-Id": context.current_correlation_id(), "Content-Type": "application/json",
                   SERVICE_KEY_HEADER: self.service_key}
        try:
            async with self._session.post(f"{random.choice(self.urls[service])}/bus/{operation}", data=dumps(arguments),
                                          headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=timeout) if timeout else None,
                                          ) as response:
                status, content = response.status, await response.read()
        except asyncio.TimeoutError as exc:  # before ClientError: aiohttp's timeouts are both
            raise ServiceUnavailable(f"{service}: no answer in time") from exc
        except aiohttp.ClientError as exc:
            # A command may have been received: it is not sent again.
            raise ServiceUnavailable(f"{service}: {exc!r}") from exc
        if status >= 500:
            raise ServiceUnavailable(f"{service}: answered {status}")
        body = json.loads(content)
        if status >= 300:
            raise DomainError(body.get("code", "refused"), body.get("message", ""), status=status,
                              **(body.get("details") or {}))
        return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
