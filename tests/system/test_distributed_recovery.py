"""Issue #26.6: after kill -9 of every instance of the order service during completions, its
consumers are back and every completion has ended, with the order view showing it, within
10 s of the restart. The payments are held until the order instances are back, so every
completion is in flight at the kill and its last answer reaches a consumer group that has to
re-form. The stores are read apart from the views (tests/helpers/completion.py)."""
from __future__ import annotations

import asyncio
import os
import signal
import time

import asyncpg
import pytest

from tests.helpers.completion import placed_facts, settled
from tests.helpers.processes import request_surviving_a_crash
from tests.helpers.solidus import CARD, full_flow

pytestmark = pytest.mark.distributed_only

COMPLETIONS = 8
RECOVERY_S = 10.0


def instances_of(system, service: str) -> list:
    return [p for name, p in system.processes.items() if name == service or name.startswith(f"{service}-")]


async def kill_every_instance(system, service: str) -> tuple[float, float]:
    """kill -9 every instance of `service` at once; returns when the supervisor has them all
    back and ready: (when the last was started again, when all answered ready), monotonic."""
    victims = instances_of(system, service)
    old = {p.name: p.pid for p in victims}
    for process in victims:
        os.kill(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while any(p.pid == old[p.name] or not p.alive() for p in victims):
        assert time.monotonic() < deadline, f"{service} was not restarted"
        await asyncio.sleep(0.05)
    await asyncio.to_thread(system.wait_ready, 90, tuple(old))
    return max(p.started_at for p in victims), time.monotonic()


async def waiting_on_payment(stack, numbers: list[str], timeout: float = 30) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval("SELECT count(*) FROM \"order\".sagas WHERE key = ANY($1) AND ended_at IS NULL"
                                  " AND 'process_payments' = ANY(invoked)", numbers) < len(numbers):
            assert time.monotonic() < deadline, "the completions did not reach the payment step"
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def test_every_completion_ends_within_10s_of_restarting_every_order_instance(gateway, system, stack, faults):
    orders = [await full_flow(gateway, card=CARD, coupon=None, complete=False) for _ in range(COMPLETIONS)]
    faults.arm("hold", "payment.process_payments")
    completions = [asyncio.create_task(request_surviving_a_crash(
        lambda number=number, token=token: gateway.put(f"/api/checkouts/{number}/complete", headers=token)))
        for number, token, _total, _ in orders]
    await waiting_on_payment(stack, [number for number, *_ in orders])
    restarted_at, ready_at = await kill_every_instance(system, "order")
    faults.disarm("hold", "payment.process_payments")
    await asyncio.gather(*completions)

    for number, *_ in orders:
        await settled(stack, number, timeout=max(0.1, restarted_at + RECOVERY_S - time.monotonic()))
    ended_after = time.monotonic() - restarted_at
    assert ended_after <= RECOVERY_S, (f"the completions ended {ended_after:.1f} s after the restart"
                                       f" ({ready_at - restarted_at:.1f} s to ready)")

    for number, *_ in orders:
        facts = await placed_facts(stack, number)
        # The order's own events are in its view in the same transaction: what ended shows.
        assert facts["order"]["state"] == ("complete" if facts["completed"] else "confirm"), (number, facts)
        if facts["completed"]:
            assert sum(facts["allocated"].values()) == 1 and not facts["released"], (number, facts)
    shown = [(await gateway.get(f"/api/orders/{number}", headers=token)).json()["state"]
             for number, token, *_ in orders]
    assert shown == ["complete"] * COMPLETIONS, shown
