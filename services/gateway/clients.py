"""HTTP clients for the services' internal APIs. The gateway holds no state of its own.

aiohttp rather than httpx: every public request makes two to five of these calls, and
aiohttp spends about a fifth of httpx's CPU on each (docs/performance.md).
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

import aiohttp

from shared import context
from shared.jsonutil import dumps

SERVICES = ("cart", "order", "shipping", "payment")
# Generous: under saturation a request should be slow, not fail.
DEFAULT_TIMEOUT_S = 30.0


def service_url(name: str) -> str:
    return os.environ.get(f"{name.upper()}_URL", f"http://127.0.0.1:{8100 + SERVICES.index(name) + 1}")


class ServiceUnavailable(Exception):
    """A service could not be reached, did not answer in time, or failed (5xx): the gateway
    answers 503 with `Retry-After`, in the dialect's shape."""


@dataclass(frozen=True)
class ServiceResponse:
    status_code: int
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class ServiceClients:
    session: aiohttp.ClientSession

    @classmethod
    def create(cls) -> "ServiceClients":
        # Idle connections are dropped well before the services' uvicorn closes them (5 s),
        # so a request never races the server closing the connection it reuses.
        connector = aiohttp.TCPConnector(limit=200, keepalive_timeout=2.0)
        return cls(aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=DEFAULT_TIMEOUT_S)))

    async def call(self, service: str, method: str, path: str, *, json: Any = None,
                   params: dict[str, Any] | None = None, timeout: float | None = None,
                   headers: dict[str, str] | None = None) -> ServiceResponse:
        # The request id travels on, so the events a service appends carry it as correlation.
        headers = {**(headers or {}), "X-Request-Id": context.current_correlation_id()}
        body = None
        if json is not None:
            body = dumps(json)
            headers["Content-Type"] = "application/json"
        url = service_url(service) + path
        # A list value repeats the key (`variant_id=1&variant_id=2`).
        query = [(k, _query_value(item)) for k, v in (params or {}).items() if v is not None
                 for item in (v if isinstance(v, (list, tuple)) else [v])]
        request_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else None
        for attempt in (1, 2):
            try:
                async with self.session.request(method, url, data=body, params=query, headers=headers,
                                                timeout=request_timeout) as response:
                    content = await response.read()
                if response.status >= 500:  # the service is down or failing: not the caller's fault
                    raise ServiceUnavailable(f"{service}: answered {response.status}")
                return ServiceResponse(response.status, content)
            except asyncio.TimeoutError as exc:  # before ClientConnectionError: it includes timeouts
                raise ServiceUnavailable(f"{service}: no answer in time") from exc
            except aiohttp.ClientConnectionError as exc:
                # A command may have been received: only a read is ever sent twice.
                if method != "GET" or attempt == 2:
                    raise ServiceUnavailable(f"{service}: {exc!r}") from exc
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self.session.close()
