"""A service's typed interface, called in-process or over HTTP: the same answers both ways.

Each service publishes its operations as a `typing.Protocol` (`services/<service>/api.py`:
`OrderService`, `CartService`, ...) and implements it in `services/<service>/operations.py`.
A caller holds an object of the Protocol's type and calls `order.complete(number, ...)`:

- `local(OrderService, OrderOperations(ctx))` when the service runs in the same process;
- `remote(OrderService, urls, key)` when it runs apart: `POST <url>/bus/<method>` with the
  arguments as JSON, the caller's key (shared/service_access.py) and the request's id.

Both give the caller the answer as JSON values (money as decimal strings: `jsonable`) and a
refusal as the service's own `DomainError` (code, message, status, details); an outage (the
service's database, or the service itself, unreachable, failing or too slow) is a
`ServiceUnavailable`. Only the Protocol's methods are exposed, called and answered
(`method`, used by the services' bus routes through shared/internal.py:answer_bus_call).
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import json
import random
from typing import Any, Awaitable, Callable, TypeVar, cast

import aiohttp

from shared import context
from shared.db import OUTAGE_ERRORS
from shared.errors import DomainError
from shared.jsonutil import JSON_SCALARS, dumps, json_scalar
from shared.service_access import CAUSATION_HEADER, SERVICE_KEY_HEADER

P = TypeVar("P")
Method = Callable[..., Awaitable[Any]]
# Generous: under saturation a request should be slow, not fail.
DEFAULT_TIMEOUT_S = 30.0


class ServiceUnavailable(Exception):
    """A service could not be reached, did not answer in time, or failed (5xx): the gateway
    answers 503 with `Retry-After`, in the dialect's shape."""


def operations(protocol: type) -> tuple[str, ...]:
    """The names of the Protocol's methods (its own and its Protocol bases'), sorted."""
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass is object or not getattr(klass, "_is_protocol", False) or klass.__module__ == "typing":
            continue
        names |= {name for name, value in vars(klass).items()
                  if not name.startswith("_") and inspect.iscoroutinefunction(value)}
    return tuple(sorted(names))


def signature(protocol: type, name: str) -> inspect.Signature:
    """The Protocol's signature of `name`, without `self`."""
    full = inspect.signature(getattr(protocol, name))
    return full.replace(parameters=list(full.parameters.values())[1:])


def jsonable(value: Any) -> Any:
    """`value` as JSON gives it back: what the HTTP way hands the caller, without the text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, JSON_SCALARS):
        return json_scalar(value)  # as `dumps` writes them on the HTTP way
    return value


class Proxy:
    """An object exposing exactly a Protocol's methods (see `local` and `remote`)."""

    def __init__(self, protocol: type, methods: dict[str, Method], transport: Transport | None = None) -> None:
        self._protocol = protocol
        self._transport = transport
        for name, function in methods.items():
            setattr(self, name, function)

    def __repr__(self) -> str:
        return f"<{'remote' if self._transport else 'local'} {self._protocol.__name__}>"


def method(protocol: type, target: Any, name: str) -> Method | None:
    """The server side of a call: `target`'s method `name` if the Protocol has it, else None
    (an implementation's other attributes are never reachable by name)."""
    return getattr(target, name) if name in operations(protocol) else None


# -- in-process ----------------------------------------------------------------------------
def local(protocol: type[P], impl: P) -> P:
    """`impl` as its callers see it when it runs in their process: the Protocol's methods
    only, answers through `jsonable` (as over HTTP), a database outage as ServiceUnavailable
    (as a service apart answers it: 503); a DomainError passes through."""
    if protocol not in type(impl).__mro__:
        raise TypeError(f"{impl!r} does not subclass {protocol.__name__}")
    service = protocol.__name__

    def bound(name: str) -> Method:
        function = getattr(impl, name)

        @functools.wraps(function)
        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return jsonable(await function(*args, **kwargs))
            except OUTAGE_ERRORS as exc:
                raise ServiceUnavailable(f"{service}: {exc!r}") from exc

        return call

    return cast(P, Proxy(protocol, {name: bound(name) for name in operations(protocol)}))


# -- over HTTP -----------------------------------------------------------------------------
class Transport:
    """The HTTP client of one caller's remote proxies: its key and its connections."""

    def __init__(self, key: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.key = key
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def post(self, service: str, urls: list[str], name: str, arguments: dict[str, Any]) -> Any:
        if not urls:
            raise ServiceUnavailable(f"{service}: no URL given")
        if self._session is None:
            # Idle connections are dropped well before the services' uvicorn closes them
            # (5 s), so a request never races the server closing the connection it reuses.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=2.0),
                timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        headers = {"X-Request-Id": context.current_correlation_id(), "Content-Type": "application/json",
                   SERVICE_KEY_HEADER: self.key}
        if (causation := context.causation_id.get()) is not None:  # what the callee's events are caused by
            headers[CAUSATION_HEADER] = causation
        try:
            async with self._session.post(f"{random.choice(urls)}/bus/{name}", data=dumps(arguments),
                                          headers=headers) as response:
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
            self._session = None


def remote(protocol: type[P], urls: list[str], key: str, *, transport: Transport | None = None) -> P:
    """The service at `urls` (its instances: each call goes to one of them) as its callers
    see it from another process. Arguments are bound to the Protocol's signature (a call the
    Protocol does not take is a TypeError here, never sent); 4xx is the service's DomainError,
    5xx, a timeout or a broken connection ServiceUnavailable (a command that may have arrived
    is never sent again)."""
    via = transport or Transport(key)
    service = protocol.__name__

    def bound(name: str) -> Method:
        parameters = signature(protocol, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            arguments = parameters.bind(*args, **kwargs).arguments  # only what the caller gave
            return await via.post(service, urls, name, dict(arguments))

        call.__name__ = call.__qualname__ = name
        call.__signature__ = parameters  # type: ignore[attr-defined]
        return call

    return cast(P, Proxy(protocol, {name: bound(name) for name in operations(protocol)}, via))


async def close(*proxies: Any) -> None:
    """Closes the HTTP connections of remote proxies (a local one holds none)."""
    for proxy in proxies:
        transport = getattr(proxy, "_transport", None)
        if transport is not None:
            await transport.close()
