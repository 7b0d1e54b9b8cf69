"""shared/rpc.py against a real served interface: the cart service's operations
(`CartOperations` on a fresh schema of the suite's PostgreSQL) answered at `/bus/<method>` by
the services' own bus route (shared/internal.py:answer_bus_call) under a real uvicorn.
Called in-process (`local`) and over HTTP (`remote`), an operation gives the same answer and
the same refusal; an outage is ServiceUnavailable; only the Protocol's methods are reachable."""
from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.cart import context as cart_context
from services.cart.api import CartService
from services.cart.operations import CartOperations
from shared import rpc
from shared.errors import DomainError
from shared.eventstore import EventStore
from shared.internal import answer_bus_call
from shared.service import ServiceContext
from shared.service_access import GATEWAY, SCOPES
from tests.conftest import fresh_schema, schema_pool
from tillstream.stack import free_port

CART_MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "cart" / "migrations"
GATEWAY_KEY = "rpc-test-gateway-key-0123456789abcdef"
OPERATOR_KEY = "rpc-test-operator-key-0123456789abcdef"


def served_app(settings, impl: CartOperations) -> FastAPI:
    """The cart's bus route as a service alone answers it, plus two broken neighbours."""
    app = FastAPI()

    @app.post("/bus/{operation}")
    async def bus(operation: str, request: Request):
        return await answer_bus_call(request, settings, "cart", CartService, impl, operation)

    @app.post("/failing/bus/{operation}")
    async def failing(operation: str):
        return JSONResponse({"code": "boom", "message": "failed", "details": {}}, status_code=500)

    @app.post("/slow/bus/{operation}")
    async def slow(operation: str):
        await asyncio.sleep(5)
        return {}

    return app


@contextlib.asynccontextmanager
async def serving(app: FastAPI):
    port = free_port()
    # A request still open at the end (the slow neighbour's) is cut after a second, not awaited.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                          timeout_graceful_shutdown=1))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
async def cart(stack, unique):
    """(settings, CartOperations, base URL) of a cart on its own schema, served."""
    settings = stack.settings(gateway_key=GATEWAY_KEY, operator_key=OPERATOR_KEY)
    async with fresh_schema(stack, f"t_{unique}", CART_MIGRATIONS) as schema:
        async with schema_pool(stack, schema, max_size=5) as pool:
            impl = CartOperations(cart_context.build(
                ServiceContext("cart", settings, pool, EventStore(schema, f"t_{unique}.events"))))
            await impl.load_catalog(products=[{"id": 7001, "name": "Mug", "slug": f"mug-{unique}", "variants": [
                {"id": 7101, "sku": f"MUG-{unique}", "name": "Mug", "prices": {"USD": "12.50"}}]}])
            async with serving(served_app(settings, impl)) as url:
                yield settings, impl, url


def refusal_of(error: DomainError) -> tuple:
    return error.code, error.status, error.message, error.details


async def test_local_and_remote_give_the_same_answers_and_refusals(cart):
    settings, impl, url = cart
    here = rpc.local(CartService, impl)
    apart = rpc.remote(CartService, [url], settings.gateway_key)
    try:
        # Money as decimal strings both ways, the same rows.
        local_rows = await here.list_variants(currency="USD", variant_id=7101)
        remote_rows = await apart.list_variants(currency="USD", variant_id=7101)
        assert local_rows == remote_rows and local_rows[0]["price"] == "12.50"
        assert await here.list_products() == await apart.list_products()
        assert await here.discarded_among(variant_ids=[7101]) == await apart.discarded_among(variant_ids=[7101]) == []
        # The same refusal: code, status, message and details (a variant not priced in EUR).
        refusals = []
        for proxy in (here, apart):
            with pytest.raises(DomainError) as refused:
                await proxy.add_line_item("R000000001", variant_id=7101, quantity=1, currency="EUR")
            refusals.append(refusal_of(refused.value))
        assert refusals[0] == refusals[1] == ("invalid_price", 422, "is not a number", {"field": "price"})
        refusals = []
        for proxy in (here, apart):
            with pytest.raises(DomainError) as refused:
                await proxy.find_line(line_id=987654321)
            refusals.append(refusal_of(refused.value))
        assert refusals[0] == refusals[1] == ("not_found", 404, "line item not found", {})
    finally:
        await rpc.close(apart)


async def test_only_the_protocols_methods_are_exposed(cart):
    settings, impl, url = cart
    methods = set(rpc.operations(CartService))
    assert {"add_line_item", "find_line", "load_catalog"} <= methods and "line_json" not in methods
    here, apart = rpc.local(CartService, impl), rpc.remote(CartService, [url], settings.gateway_key)
    try:
        for proxy in (here, apart):
            assert {name for name in vars(proxy) if not name.startswith("_")} == methods
            assert not hasattr(proxy, "ctx")
        # Arguments the Protocol does not take are refused before anything is sent.
        with pytest.raises(TypeError):
            await apart.find_line(line_id=1, order_number="R1")
        with pytest.raises(TypeError):
            rpc.local(CartService, object())  # type: ignore[arg-type]
    finally:
        await rpc.close(apart)


async def test_a_name_outside_the_protocol_is_a_404(cart, monkeypatch):
    """Even a name a caller's scope held by mistake reaches nothing but the Protocol's methods."""
    settings, impl, url = cart
    assert rpc.method(CartService, impl, "find_line") is not None
    for name in ("ctx", "__init__", "line_json"):
        assert rpc.method(CartService, impl, name) is None
    monkeypatch.setitem(SCOPES[GATEWAY], "cart", SCOPES[GATEWAY]["cart"] | {"ctx", "__init__"})
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        for name in ("ctx", "__init__"):
            answer = await client.post(f"{url}/bus/{name}", json={}, headers={"X-Service-Key": GATEWAY_KEY})
            assert answer.status_code == 404, (name, answer.text)
            assert answer.json()["code"] == "unknown_operation"
        known = await client.post(f"{url}/bus/discarded_among", json={"variant_ids": [7101]},
                                  headers={"X-Service-Key": GATEWAY_KEY})
        assert (known.status_code, known.json()) == (200, [])


async def test_an_outage_is_service_unavailable(cart):
    settings, impl, url = cart
    with socket_closed_port() as dead:
        cases = {"5xx": rpc.remote(CartService, [f"{url}/failing"], settings.gateway_key),
                 "timeout": rpc.remote(CartService, [f"{url}/slow"], settings.gateway_key,
                                       transport=rpc.Transport(settings.gateway_key, timeout_s=0.3)),
                 "refused": rpc.remote(CartService, [f"http://127.0.0.1:{dead}"], settings.gateway_key)}
        try:
            for case, proxy in cases.items():
                started = time.monotonic()
                with pytest.raises(rpc.ServiceUnavailable):
                    await proxy.list_products()
                assert time.monotonic() - started < 4, case
        finally:
            await rpc.close(*cases.values())


async def test_a_database_outage_in_process_is_service_unavailable(cart):
    """As a service apart answers its database being down (503), so does the local way."""
    settings, impl, url = cart
    closed = CartOperations(cart_context.build(ServiceContext("cart", settings, _ClosedPool(), impl.ctx.store)))
    with pytest.raises(rpc.ServiceUnavailable):
        await rpc.local(CartService, closed).list_products()


class _ClosedPool:
    async def fetch(self, *args, **kwargs):
        raise ConnectionRefusedError("the database is down")


@contextlib.contextmanager
def socket_closed_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]
