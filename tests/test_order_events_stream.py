"""`order.events` as a subscriber reads it (issue #25, the first "Done when"): after a mix of
Solidus and GetCandy checkouts, a declined card, a completion that compensates (a single-use
coupon already spent) and an operator's replay, a fresh consumer reads the topic from the
beginning with a plain Kafka client and finds, per key of this test's orders, one stream: the
order's own events (aggregate type Order, aggregate id = key), sequence 1..n without gaps or
repeats, every copy of an event on its live partition, and every cause before its effect with
the cause's id (earlier in the same partition, or an event published on another topic that
occurred no later)."""
from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from datetime import datetime

import asyncpg
import pytest

from services.order.saga import COMPLETION
from tests.helpers.cli import cli
from tests.helpers.completion import getcandy_number, settled
from tests.helpers.getcandy import placed_ready_order
from tests.helpers.kafka import every_topic, read_all
from tests.helpers.solidus import CARD, full_flow

pytestmark = pytest.mark.usefixtures("getcandy_data")

DECLINED = {**CARD, "number": "4000000000000002"}
OTHER_TOPICS = ("cart.events", "shipping.events", "payment.events", "order.saga")


async def checkouts(gateway, single_use_coupon) -> list[str]:
    """The orders: Solidus by card and by check, a declined card, a GetCandy order, and two
    Solidus orders holding one single-use coupon (the second one's completion compensates)."""
    numbers = []
    for card in (CARD, None):
        number, _, _, completed = await full_flow(gateway, card=card)
        assert completed.status_code == 200, completed.text
        numbers.append(number)
    number, _, _, declined = await full_flow(gateway, card=DECLINED)
    assert declined.status_code == 422, declined.text
    numbers.append(number)
    order_id = await placed_ready_order(gateway, quantity=1)
    processed = await gateway.post("/api/v1/orders/process", json={"order_id": order_id, "payment_token": "x"})
    assert processed.status_code == 200, processed.text
    numbers.append(getcandy_number(order_id))
    code, _ = single_use_coupon("1", kind="items_percent")
    first, first_token, _, _ = await full_flow(gateway, card=None, coupon=code, complete=False)
    second, second_token, _, _ = await full_flow(gateway, card=None, coupon=code, complete=False)
    won = await gateway.put(f"/api/checkouts/{first}/complete", headers=first_token)
    assert won.status_code == 200, won.text
    lost = await gateway.put(f"/api/checkouts/{second}/complete", headers=second_token)
    assert lost.status_code == 422, lost.text  # the cart's lock refused, the lock step undone
    return [*numbers, first, second]


async def stored(stack, numbers: list[str]) -> dict[str, list[dict]]:
    """The order store's events of each order's own stream, once its completions have ended."""
    for number in numbers:
        await settled(stack, number)
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch('SELECT event_id::text, aggregate_id, sequence FROM "order".events'
                                " WHERE aggregate_type = 'Order' AND aggregate_id = ANY($1)", numbers)
    finally:
        await conn.close()
    by_order: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_order[row["aggregate_id"]].append(dict(row))
    return by_order


async def read(stack, topics) -> dict[str, list]:
    present = set(await every_topic(stack.settings()))
    return {topic: await read_all(stack.settings(), topic) if topic in present else [] for topic in topics}


async def published(stack, expected: set[str]) -> dict[str, list]:
    """Every topic from the beginning, once every event of `expected` is on `order.events`."""
    deadline = time.monotonic() + 60
    while True:
        topics = await read(stack, ("order.events", *OTHER_TOPICS))
        seen = {json.loads(r.value)["event_id"] for r in topics["order.events"]}
        if expected <= seen:
            return topics
        assert time.monotonic() < deadline, f"{len(expected - seen)} stored events never reached order.events"
        await asyncio.sleep(0.3)


def check_stream(number: str, records: list, elsewhere: dict[str, datetime]) -> None:
    """One key's records on `order.events`, in partition order."""
    first: dict[str, tuple[int, int, dict]] = {}  # event id -> (partition, offset, body) of its first copy
    for record in records:
        body = json.loads(record.value)
        event_id = body["event_id"]
        if event_id in first:
            assert first[event_id][0] == record.partition, f"{number}: a copy of {body['type']} on another partition"
            assert body["sequence"] == first[event_id][2]["sequence"]
            continue
        first[event_id] = (record.partition, record.offset, body)
        assert body["aggregate_type"] == "Order" and body["aggregate_id"] == number, \
            f"{number}: {body['type']} of stream {body['aggregate_type']} {body['aggregate_id']} under its key"
    events = sorted(first.values(), key=lambda found: found[1])
    sequences = [body["sequence"] for _, _, body in events]
    assert sequences == list(range(1, len(events) + 1)), f"{number}: sequences {sequences}"
    for partition, offset, body in events:
        cause = body["causation_id"]
        if cause is None:
            continue
        if cause in first:
            assert first[cause][0] == partition and first[cause][1] < offset, \
                f"{number}: {body['type']} published before its cause {first[cause][2]['type']}"
        else:
            assert cause in elsewhere, f"{number}: {body['type']}'s cause {cause} was never published"
            assert elsewhere[cause] <= datetime.fromisoformat(body["occurred_at"]), \
                f"{number}: {body['type']} occurred before its cause"


@pytest.mark.both_topologies
async def test_order_events_carries_one_stream_per_order_in_sequence_causes_first(gateway, stack,
                                                                                  single_use_coupon):
    numbers = await checkouts(gateway, single_use_coupon)
    by_order = await stored(stack, numbers)
    assert set(by_order) == set(numbers)
    expected = {row["event_id"] for rows in by_order.values() for row in rows}
    live = await published(stack, expected)
    live_partition = {json.loads(r.value)["event_id"]: r.partition for r in live["order.events"]}

    replayed = json.loads(cli(stack, "replay", "--service", "order", "--json").stdout)
    assert replayed["replayed"] >= len(expected)
    # The replay's copies arrive after the live ones: wait for as many again.
    deadline = time.monotonic() + 60
    while True:
        topics = await read(stack, ("order.events", *OTHER_TOPICS))
        copies: dict[str, int] = defaultdict(int)
        for record in topics["order.events"]:
            copies[json.loads(record.value)["event_id"]] += 1
        if all(copies[event_id] >= 2 for event_id in expected):
            break
        assert time.monotonic() < deadline, "the replay's copies never arrived"
        await asyncio.sleep(0.3)

    elsewhere = {}
    for topic in OTHER_TOPICS:
        for record in topics[topic]:
            body = json.loads(record.value)
            elsewhere[body["event_id"]] = datetime.fromisoformat(body["occurred_at"])
    per_key: dict[str, list] = defaultdict(list)
    for record in sorted(topics["order.events"], key=lambda r: (r.partition, r.offset)):
        key = record.key.decode() if record.key else None
        if key in by_order:
            per_key[key].append(record)
            event_id = json.loads(record.value)["event_id"]
            assert record.partition == live_partition.get(event_id, record.partition), \
                f"{key}: a replayed copy of {event_id} on another partition than the live one"
    assert set(per_key) == set(numbers)
    for number in numbers:
        check_stream(number, per_key[number], elsewhere)
        assert {json.loads(r.value)["event_id"] for r in per_key[number]} == \
            {row["event_id"] for row in by_order[number]}, f"{number}: the topic and the store differ"
    check_answers(topics, set(numbers))


def check_answers(topics: dict[str, list], numbers: set[str]) -> None:
    """The saga publishes no commands (nothing of this test's orders on order.saga): it calls
    its participants, and each participant's answer names as its cause the event that made the
    saga take that step (the CompletionRequested for the lock, the previous answer after it,
    the failing answer for an undo), published and no later than the answer."""
    everything = {}
    for records in topics.values():
        for record in records:
            body = json.loads(record.value)
            everything[body["event_id"]] = body
    assert not [r for r in topics["order.saga"] if r.key and r.key.decode() in numbers], "a saga command published"
    answer_types = {cls.event_type for cls in COMPLETION.listens_to()}
    answers = [body for body in everything.values()
               if body["type"] in answer_types and body["payload"].get("order_number") in numbers]
    assert {"cart.CartLocked", "cart.CartLockRefused", "cart.CartUnlocked", "shipping.StockAllocated",
            "payment.PaymentsProcessed", "payment.PaymentsDeclined"} <= {a["type"] for a in answers}
    for answer in answers:
        cause = everything.get(answer["causation_id"] or "")
        assert cause is not None, f"{answer['type']} names no published cause"
        assert datetime.fromisoformat(cause["occurred_at"]) <= datetime.fromisoformat(answer["occurred_at"]), \
            f"{answer['type']} occurred before its cause {cause['type']}"
        if answer["type"] in ("cart.CartLocked", "cart.CartLockRefused"):
            assert cause["type"] == "order.CompletionRequested", f"{answer['type']} caused by {cause['type']}"
        if answer["type"] == "shipping.StockAllocated":
            assert cause["type"] == "cart.CartLocked", f"{answer['type']} caused by {cause['type']}"
