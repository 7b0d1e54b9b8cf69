"""Issue #23, point 4: the services' bus routes, /metrics and /readyz answer only on the internal
listener, never on the public port; each caller's key opens only its own operations; the
internal listener holds bodies and nesting to the public API's bounds."""
from __future__ import annotations

import time
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from shared.service_access import SCOPES
from shared.validation import MAX_BODY_BYTES, MAX_JSON_DEPTH
from tillstream.system import SERVICE_NAMES


def bus_url(system, service: str, operation: str) -> str:
    return f"{system.service_url(service)}/bus/{operation}"


@pytest.mark.both_topologies
async def test_the_bus_metrics_and_readiness_answer_only_on_the_internal_listener(system, gateway):
    for path in ("/metrics", "/readyz"):
        assert (await gateway.get(path)).status_code == 404, path
    for service in SERVICE_NAMES:
        for path in (f"/services/{service}/bus/list_products", f"/bus/{service}"):
            refused = await gateway.post(path, json={}, headers={"X-Service-Key": system.config.gateway_key})
            assert refused.status_code in (404, 405), (path, refused.status_code)
    assert (await gateway.get("/healthz")).status_code == 200  # liveness stays public
    assert (await gateway.get("/openapi.json")).status_code == 200
    assert (await gateway.get("/api/variants")).status_code == 200

    assert urlsplit(system.internal_url).hostname == "127.0.0.1"  # loopback by default
    assert urlsplit(system.internal_url).port != urlsplit(system.gateway_url).port
    async with httpx.AsyncClient(base_url=system.internal_url, timeout=30) as internal:
        assert (await internal.get("/readyz")).json()["ready"] is True
        assert "tillstream_http_request_seconds" in (await internal.get("/metrics")).text
        assert (await internal.get("/api/variants")).status_code == 404  # and the API is not there
        listed = await internal.post(bus_url(system, "cart", "list_products"), json={},
                                     headers={"X-Service-Key": system.config.gateway_key})
    assert listed.status_code == 200 and listed.json()


@pytest.mark.both_topologies
async def test_a_callers_key_opens_only_the_operations_it_needs(system):
    code = f"scoped{time.monotonic_ns()}"
    promotion = {"promotions": [{"id": 200_000 + time.monotonic_ns() % 1_000_000_000, "name": code, "code": code,
                                 "kind": "order_flat", "value": "0.01", "usage_limit": 1}]}
    gateway_key = {"X-Service-Key": system.config.gateway_key}
    operator_key = {"X-Service-Key": system.config.operator_key}
    async with httpx.AsyncClient(timeout=30) as client:
        # The gateway's key cannot change prices, coupons or stock...
        for service, operation, body in (("cart", "load_promotions", promotion), ("cart", "load_catalog", {}),
                                         ("shipping", "load_reference", {}), ("payment", "load_payment_methods", {})):
            refused = await client.post(bus_url(system, service, operation), json=body, headers=gateway_key)
            assert refused.status_code == 403, (operation, refused.text)
        # ...the operator's cannot cancel, capture, complete or read orders...
        for service, operation in (("order", "cancel"), ("payment", "capture_payment"), ("order", "complete"),
                                   ("order", "get_order"), ("cart", "list_products")):
            refused = await client.post(bus_url(system, service, operation), json={"number": "R1"},
                                        headers=operator_key)
            assert refused.status_code == 403, (operation, refused.text)
        # ...an operation that does not exist is refused alike (the answer reveals nothing)...
        unknown = await client.post(bus_url(system, "order", "drop_everything"), json={}, headers=gateway_key)
        assert unknown.status_code == 403
        # ...no key, or a wrong one, is 401 and never echoed.
        for headers in ({}, {"X-Service-Key": ""}, {"X-Service-Key": system.config.gateway_key + "x"}):
            refused = await client.post(bus_url(system, "cart", "list_products"), json={}, headers=headers)
            assert refused.status_code == 401 and system.config.gateway_key not in refused.text
        conn = await asyncpg.connect(system.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM cart.promotions WHERE code = $1", code) == 0
            # Each key does open its own operations.
            loaded = await client.post(bus_url(system, "cart", "load_promotions"), json=promotion, headers=operator_key)
            assert loaded.status_code == 200, loaded.text
            assert await conn.fetchval("SELECT count(*) FROM cart.promotions WHERE code = $1", code) == 1
        finally:
            await conn.close()
        listed = await client.post(bus_url(system, "cart", "list_products"), json={}, headers=gateway_key)
        assert listed.status_code == 200
        # The order service's key opens what it calls of its participants, nothing else.
        order_key = {"X-Service-Key": system.config.order_key}
        methods = await client.post(bus_url(system, "payment", "payment_methods"), json={}, headers=order_key)
        assert methods.status_code == 200, methods.text
        for service, operation in (("payment", "load_payment_methods"), ("order", "cancel"),
                                   ("payment", "capture_payment"), ("cart", "list_products")):
            refused = await client.post(bus_url(system, service, operation), json={"number": "R1"}, headers=order_key)
            assert refused.status_code == 403, (operation, refused.text)


@pytest.mark.both_topologies
async def test_the_internal_listener_bounds_bodies_and_nesting_like_the_api(system, gateway):
    url, headers = bus_url(system, "cart", "list_products"), {"X-Service-Key": system.config.gateway_key,
                                                              "Content-Type": "application/json"}
    oversized = b'{"padding": "' + b"a" * MAX_BODY_BYTES + b'"}'
    deep = b'{"a": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}"
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await client.post(url, content=oversized, headers=headers)).status_code == 413
        assert (await gateway.post("/api/orders", content=oversized, headers=headers)).status_code == 413  # as /api
        assert (await client.post(url, content=deep, headers=headers)).status_code == 400
        for malformed in (b"{", b"[]", b'"text"', b"NaN", b'{"no_such_argument": 1}'):
            refused = await client.post(url, content=malformed, headers=headers)
            assert refused.status_code == 400, (malformed, refused.status_code, refused.text)
        # A body past the bound is refused before the key is looked at: a caller without one
        # cannot make the listener hold it.
        unkeyed = await client.post(url, content=oversized, headers={"Content-Type": "application/json"})
        assert unkeyed.status_code == 413, unkeyed.text
        # Text no field holds is a 400, as on /api (asyncpg cannot store NUL or a surrogate).
        operator = {"X-Service-Key": system.config.operator_key, "Content-Type": "application/json"}
        loader = bus_url(system, "cart", "load_promotions")
        for escaped in ("10\\u0000off", "10\\ud800off"):  # JSON escapes: a NUL, a lone surrogate
            body = ('{"promotions": [{"id": 99999, "name": "x", "code": "' + escaped + '", "kind": "order_flat",'
                    ' "value": "1.00"}]}')
            refused = await client.post(loader, content=body.encode(), headers=operator)
            assert refused.status_code == 400, (escaped, refused.status_code, refused.text)
        # Nothing was wedged by them.
        assert (await client.post(url, json={}, headers=headers)).status_code == 200


def test_every_operation_belongs_to_a_caller_and_the_loaders_to_the_operator_alone():
    """A new operation must be given to the caller that needs it, or nobody can call it; a
    scope names only methods of the service's Protocol; what loads reference data is the
    operator's alone, and the operator's key opens nothing else."""
    from services.cart.api import CartService
    from services.order.api import OrderService
    from services.payment.api import PaymentService
    from services.shipping.api import ShippingService
    from shared.rpc import operations

    interfaces = {"cart": CartService, "order": OrderService, "shipping": ShippingService, "payment": PaymentService}
    for service, interface in interfaces.items():
        assert operations(interface), service
        for operation in operations(interface):
            owners = [caller for caller, scope in SCOPES.items() if operation in scope.get(service, ())]
            assert owners, (service, operation)
            assert (owners == ["operator"]) == operation.startswith("load_"), (service, operation, owners)
        for scope in SCOPES.values():
            assert scope.get(service, frozenset()) <= set(operations(interface)), service
    assert {service for scope in SCOPES.values() for service in scope} == set(interfaces)
