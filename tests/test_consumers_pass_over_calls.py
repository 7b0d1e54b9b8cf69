"""Issue #26.5, in one process: no consumer redoes what a call already did. The order calls
shipping's `build_shipments` under its DeliveryRequested, and the completion saga calls its
participants and records their answers from the replies; the same events reach shipping's
`orders` and the order's `saga` consumers from Kafka, often while the call still runs. Those
wait for the call (shared/under_way.py) and pass over what it did, with no transaction: their
`processed` and `duplicate` counts stay 0 through many concurrent checkouts (where a delivery
racing its call shows). A call that fails while under way leaves its event to the consumer."""
from __future__ import annotations

import asyncio
import time

from tests.helpers.metrics import consumed
from tests.helpers.solidus import CARD, full_flow
from tests.helpers.waiting import quiet
from tests.test_delivery_by_call import leave_address, to_address

CHECKOUTS = 12
ANSWERS = 3  # per card checkout, each answered by a call: CartLocked, StockAllocated, PaymentsProcessed


async def until(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_through_concurrent_checkouts_no_consumer_handles_what_a_call_did(gateway, system):
    expected = {"shipping.orders": CHECKOUTS, "order.saga": CHECKOUTS * ANSWERS}  # from Kafka, at least
    outcomes = ("processed", "duplicate", "applied_inline")

    def counts() -> dict[str, dict[str, float]]:
        return {c: {outcome: consumed(system, c, outcome) for outcome in outcomes} for c in expected}

    # What earlier tests published may still be on its way to the consumers (in one process
    # they fetch every BACKSTOP_CONSUMER_PACE_MS, and the relays linger ONE_PROCESS_OUTBOX_LINGER_MS),
    # and is not this test's to count: a replay of an earlier test reaching shipping's consumer
    # late was counted here as a duplicate.
    before = await quiet(counts, what="the consumers")
    flows = await asyncio.gather(*(full_flow(gateway, card=CARD, coupon=None) for _ in range(CHECKOUTS)))
    for _, _, _, completed in flows:
        assert completed is not None and completed.status_code == 200, completed and completed.text
        assert completed.json()["state"] == "complete", completed.text

    def since() -> dict[str, dict[str, float]]:
        return {c: {o: n - before[c][o] for o, n in now.items()} for c, now in counts().items()}

    await until(lambda: all(sum(since()[c].values()) >= n for c, n in expected.items()),
                "not every DeliveryRequested and answer reached its consumer")
    await asyncio.sleep(0.5)  # anything else on its way
    seen = since()
    # Every one was passed over without a transaction: the calls had done their work.
    assert {c: (seen[c]["processed"], seen[c]["duplicate"]) for c in expected} == \
        {c: (0, 0) for c in expected}, seen


async def test_a_delivery_call_that_fails_while_under_way_leaves_its_request_to_the_consumer(gateway, system,
                                                                                         faults):
    """Held still inside the call (marked under way) long after its DeliveryRequested reached
    shipping's consumer, which waits; then the call fails: the consumer builds the shipments."""
    number, token = await to_address(gateway)
    before = consumed(system, "shipping.orders", "processed")
    faults.arm("hold", "shipping.build_shipments")
    faults.arm("fail", "shipping.build_shipments")
    leaving = asyncio.create_task(leave_address(gateway, number, token))
    await asyncio.sleep(1.5)  # the DeliveryRequested was fetched long since
    assert consumed(system, "shipping.orders", "processed") == before  # it waits for the call
    faults.disarm("hold", "shipping.build_shipments")
    left = await leaving
    assert left.status_code == 200, left.text
    await until(lambda: consumed(system, "shipping.orders", "processed") == before + 1,
                "shipping's consumer did not handle the request the failed call left")
    deadline = time.monotonic() + 30
    while (shown := (await gateway.get(f"/api/orders/{number}", headers=token)).json())["state"] != "delivery":
        assert time.monotonic() < deadline, shown
        await asyncio.sleep(0.1)
    assert shown["shipments"], shown  # built by the consumer while the call failed
