"""Acceptance check 1: with requires_authentication on, creating an order needs a key."""
from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tillstream.stack import free_port, stop_process, wait_for_port
from tillstream.system import SERVICE_NAMES


async def test_1_creating_an_order_needs_a_key_when_the_store_requires_one(system):
    port = free_port()
    env = {**os.environ, "SOLIDUS_REQUIRE_API_KEY": "true", "TILLSTREAM_ADMIN_KEY": "test-admin-key",
           "TILLSTREAM_GATEWAY_KEY": system.config.gateway_key,
           "TILLSTREAM_INTERNAL_LISTEN": f"127.0.0.1:{free_port()}",
           **{f"{n.upper()}_URL": system.service_url(n) for n in SERVICE_NAMES}}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "services.gateway.app:create_app",
                             "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 30, proc)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            refused = await client.post("/api/orders", json={})
            assert refused.status_code == 401 and refused.json() == {"error": "You must specify an API key."}
            bad = await client.post("/api/orders", json={}, headers={"Authorization": "Bearer nope"})
            # The key is not echoed back: a key is a secret.
            assert bad.status_code == 401 and bad.json() == {"error": "Invalid API key specified."}
            admin = await client.post("/api/orders", json={}, headers={"Authorization": "Bearer test-admin-key"})
            assert admin.status_code == 201 and admin.json()["permissions"] == {"can_update": True}
    finally:
        stop_process(proc)
