"""Admission control at the gateway, over real HTTP against the running services: past
GATEWAY_MAX_IN_FLIGHT requests wait at the edge, and one that waits too long is shed with
a 503 that invites a retry (nothing was done for it)."""
from __future__ import annotations

import asyncio
import socket
import time

import httpx

from tests.helpers.processes import start_gateway
from tillstream.stack import stop_process


async def test_requests_past_the_limit_wait_and_are_shed_after_the_queue_timeout(system):
    # An order service that accepts connections and never answers holds the one slot.
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(16)
    proc, url, internal_url = start_gateway(system, GATEWAY_MAX_IN_FLIGHT="1", GATEWAY_QUEUE_TIMEOUT_MS="300",
                              ORDER_URL=f"http://127.0.0.1:{stalled.getsockname()[1]}")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get("/api/variants")).status_code == 200  # admitted while free
            holding = asyncio.create_task(client.post("/api/orders", json={}))
            await asyncio.sleep(0.3)
            assert not holding.done()

            started = time.monotonic()
            shed = await client.get("/api/variants")
            waited = time.monotonic() - started
            assert shed.status_code == 503
            assert shed.headers["retry-after"] == "1"
            assert shed.json() == {"error": "The service is busy; please retry."}
            assert 0.3 <= waited < 5

            health = await client.get("/healthz")  # not a public API request: never queued
            assert health.status_code == 200
            assert "tillstream_gateway_shed_total 1.0" in (await client.get(f"{internal_url}/metrics")).text

            stalled.close()  # the stalled service goes away: the held request fails, its slot frees
            assert (await holding).status_code == 503
            assert (await client.get("/api/variants")).status_code == 200
    finally:
        stalled.close()
        stop_process(proc)


async def test_a_waiting_request_is_admitted_when_a_slot_frees_and_bodies_arrive_intact(system):
    proc, url, _ = start_gateway(system, GATEWAY_MAX_IN_FLIGHT="1", GATEWAY_QUEUE_TIMEOUT_MS="10000")
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            # Eight checkouts' first steps through one slot: every one is served, with its body.
            created = await asyncio.gather(*(client.post("/api/orders", json={}) for _ in range(8)))
            assert [r.status_code for r in created] == [201] * 8
            added = await asyncio.gather(*(
                client.post(f"/api/checkouts/{r.json()['number']}/line_items",
                            headers={"X-Spree-Order-Token": r.json()["token"]},
                            json={"line_item": {"variant_id": 1, "quantity": 2}}) for r in created))
            assert [(r.status_code, r.json()["quantity"]) for r in added] == [(201, 2)] * 8

            too_large = await client.post("/api/orders", content=b"{" + b" " * (1024 * 1024) + b"}",
                                          headers={"Content-Type": "application/json"})
            assert too_large.status_code == 413
            assert "larger than" in too_large.json()["error"]
    finally:
        stop_process(proc)
