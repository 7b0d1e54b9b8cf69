"""Issue #26.6: after kill -9 of every instance of the order service during completions, its
consumers are back and every completion has ended, with the order view showing it, within
10 s of the restart. The payments are held until the order instances are back, so every
completion is in flight at the kill and its last answer reaches a consumer group that has to
re-form. The stores are read apart from the views (tests/helpers/completion.py)."""
from __future__ import annotations

import asyncio
import time

import pytest

from tests.helpers.completion import placed_facts, settled, waiting_on_step
from tests.helpers.processes import kill_9_every_instance, request_surviving_a_crash
from tests.helpers.solidus import CARD, full_flow

pytestmark = pytest.mark.distributed_only

COMPLETIONS = 8
RECOVERY_S = 10.0


async def test_every_completion_ends_within_10s_of_restarting_every_order_instance(gateway, system, stack, faults):
    orders = [await full_flow(gateway, card=CARD, coupon=None, complete=False) for _ in range(COMPLETIONS)]
    faults.arm("hold", "payment.process_payments")
    completions = [asyncio.create_task(request_surviving_a_crash(
        lambda number=number, token=token: gateway.put(f"/api/checkouts/{number}/complete", headers=token)))
        for number, token, _total, _ in orders]
    await waiting_on_step(stack, [number for number, *_ in orders], "process_payments")
    restarted_at, ready_at = await kill_9_every_instance(system, "order")
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
