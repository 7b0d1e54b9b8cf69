"""A stopped database is an outage to retry, in both dialects and both topologies: 503 with
`Retry-After`, never a 500. The suite's PostgreSQL serves every other test, so each system
here reaches it through a proxy the test stops (new connections refused, open ones cut)."""
from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from services.gateway.getcandy.ids import ORDERS
from tests.conftest import system_config
from tillstream.stack import free_port
from tillstream.system import System


class PostgresProxy:
    """Forwards 127.0.0.1:<port> to the real server until `stop()`."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        self.target = (parts.hostname, parts.port)
        self.port = free_port()
        self.url = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{self.port}")))
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> "PostgresProxy":
        self._server = await asyncio.start_server(self._pipe_both_ways, "127.0.0.1", self.port)
        return self

    async def _pipe_both_ways(self, reader, writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, upstream_writer}

        async def pipe(source, sink):
            with contextlib.suppress(ConnectionError, OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def stop(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await self._server.wait_closed()


@pytest.mark.parametrize("topology", ["one-process", "distributed"])
async def test_a_stopped_database_is_a_503_to_retry_in_each_dialect(stack, topology):
    proxy = await PostgresProxy(stack.database_url).start()
    name = f"outage-{topology}"
    config = replace(system_config(stack, topology, 1), database_url=proxy.url, data_dir=stack.workdir / name,
                     log_dir=stack.workdir / "logs" / name)
    try:
        system = await asyncio.to_thread(System(config).start)
    except BaseException:
        await proxy.stop()
        raise
    try:
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30) as client:
            created = await client.post("/api/orders", json={})
            assert created.status_code == 201, created.text
            number, token = created.json()["number"], {"X-Spree-Order-Token": created.json()["token"]}
            unknown_order = f"/api/v1/orders/{ORDERS.encode(123456789)}"
            assert (await client.get(unknown_order)).status_code == 404  # looked up, and not found
            await proxy.stop()

            answers = await asyncio.gather(
                client.get(f"/api/orders/{number}", headers=token),
                client.post("/api/orders", json={}),
                client.get(unknown_order),
                client.post("/api/v1/basket-lines", json={"variants": [{"id": "a1b2c3d4", "quantity": 1}]}))
        for response in answers:
            assert response.status_code == 503, (response.request.url, response.text)
            assert response.headers["retry-after"] == "1"
        assert [r.json() for r in answers[:2]] == [{"error": "A service is temporarily unavailable; please retry."}] * 2
        for response in answers[2:]:
            assert response.json()["error"]["http_code"] == 503
    finally:
        await asyncio.to_thread(system.stop)
        await proxy.stop()
