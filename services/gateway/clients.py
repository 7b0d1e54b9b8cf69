"""HTTP clients for the services' internal APIs. The gateway holds no state of its own."""
from __future__ import annotations

import os
from dataclasses import dataclass

import httpx

from shared import context

SERVICES = ("cart", "order", "shipping", "payment")


def service_url(name: str) -> str:
    return os.environ.get(f"{name.upper()}_URL", f"http://127.0.0.1:{8100 + SERVICES.index(name) + 1}")


@dataclass
class ServiceClients:
    clients: dict[str, httpx.AsyncClient]

    @classmethod
    def create(cls) -> "ServiceClients":
        # Idle connections are dropped well before the services' uvicorn closes them (5 s),
        # so a request never races the server closing the connection it reuses.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100, keepalive_expiry=2.0)
        # Generous: under saturation a request should be slow, not fail.
        return cls({name: httpx.AsyncClient(base_url=service_url(name), timeout=30.0, limits=limits)
                    for name in SERVICES})

    async def call(self, service: str, method: str, path: str, **kwargs) -> httpx.Response:
        # The request id travels on, so the events a service appends carry it as correlation.
        headers = {"X-Request-Id": context.current_correlation_id()}
        try:
            return await self.clients[service].request(method, path, headers=headers, **kwargs)
        except (httpx.ConnectError, httpx.RemoteProtocolError):
            if method != "GET":  # a command may have been received: never send it twice
                raise
            return await self.clients[service].request(method, path, headers=headers, **kwargs)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
