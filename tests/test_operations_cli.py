"""The operators' CLI against the running system (real processes, broker, PostgreSQL)."""
from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import asyncpg

from shared.contracts.cart import LineItemAdded, VariantSnapshot
from shared.envelope import envelope_for
from tests.helpers.cli import cli
from tests.helpers.kafka import every_topic, publish, read_all
from tests.helpers.solidus import ADMIN, CARD, V1, full_flow


async def test_events_read_tells_an_orders_story_in_causal_order(gateway, stack):
    number, *_ = await full_flow(gateway, card=CARD)
    story = json.loads(cli(stack, "events", "read", "--order", number, "--json").stdout)
    assert {e["service"] for e in story} == {"cart", "order", "shipping", "payment"}
    position = {e["event_id"]: i for i, e in enumerate(story)}
    for i, event in enumerate(story):
        if event["causation_id"] in position:
            assert position[event["causation_id"]] < i, event["type"]
    types = [e["type"] for e in story]
    assert types.index("order.CompletionRequested") < types.index("cart.CartLocked") \
        < types.index("shipping.StockAllocated") < types.index("payment.PaymentsProcessed") \
        < types.index("order.OrderCompleted")
    # The saga calls its participants: no command events any more, each answer caused by what
    # made the saga take its step.
    assert not [t for t in types if t.endswith("Requested") and t != "order.CompletionRequested"
                and t != "order.DeliveryRequested"]
    by_id = {e["event_id"]: e for e in story}
    assert by_id[story[types.index("cart.CartLocked")]["causation_id"]]["type"] == "order.CompletionRequested"
    assert by_id[story[types.index("payment.PaymentsProcessed")]["causation_id"]]["type"] == "shipping.StockAllocated"
    assert number in cli(stack, "events", "read", "--order", number).stdout
    catalogue = json.loads(cli(stack, "events", "catalog", "--json").stdout)
    assert "order.OrderCompleted.v1" in catalogue["order.events"]
    tail = cli(stack, "events", "tail", "order.events", "--from-beginning", "--limit", "3", "--json").stdout
    assert len(tail.strip().splitlines()) == 3


async def counts(stack) -> dict:
    conn = await asyncpg.connect(stack.database_url)
    try:
        return {
            **{f"{s}.events": await conn.fetchval(f'SELECT count(*) FROM "{s}".events')
               for s in ("cart", "order", "shipping", "payment")},
            "charges": await conn.fetchval("SELECT count(*) FROM payment.gateway_calls"),
            "view": [dict(r) for r in await conn.fetch(
                'SELECT number, state, item_total, ship_total, adjustment_total, payment_total, payment_state,'
                ' shipment_state, payments, shipments, completed_at FROM "order".order_view ORDER BY number')],
            "lines": [dict(r) for r in await conn.fetch('SELECT * FROM "order".order_line_items ORDER BY id')],
            "stock": [dict(r) for r in await conn.fetch(
                "SELECT * FROM shipping.stock_items ORDER BY stock_location_id, variant_id")],
        }
    finally:
        await conn.close()


async def processed(stack) -> int:
    conn = await asyncpg.connect(stack.database_url)
    try:
        return sum([await conn.fetchval(f'SELECT count(*) FROM "{s}".processed_events')
                    for s in ("cart", "order", "shipping", "payment")])
    finally:
        await conn.close()


async def test_replaying_every_stream_twice_changes_nothing_and_charges_nothing(gateway, stack):
    for card in (CARD, None, CARD):  # a busy stream: the whole session's orders, plus these
        await full_flow(gateway, card=card)
    await asyncio.sleep(1.0)
    before = await counts(stack)
    for _ in range(2):
        for service in ("cart", "order", "shipping", "payment"):
            replayed = json.loads(cli(stack, "replay", "--service", service, "--json").stdout)
            assert replayed["replayed"] == before[f"{service}.events"]
    # The duplicates are delivered and ignored: wait until the consumers have caught up.
    deadline = time.monotonic() + 60
    while True:
        lag = json.loads(cli(stack, "projections", "status", "--ours", "--json").stdout)
        if all(group.get("lag") == 0 for group in lag.values()):
            break
        assert time.monotonic() < deadline, lag
        await asyncio.sleep(0.5)
    assert await counts(stack) == before


async def test_a_rebuilt_order_view_equals_the_live_one_and_independent_totals(gateway, stack):
    number, _, total, complete = await full_flow(gateway, card=None, quantity=3)
    assert complete.status_code == 200
    before = await counts(stack)
    result = json.loads(cli(stack, "projections", "rebuild", "order_view", "--json").stdout)
    # Every stored event but the completion saga's commands, which say nothing of an order's state.
    conn = await asyncpg.connect(stack.database_url)
    try:
        commands = await conn.fetchval('SELECT count(*) FROM "order".events'
                                       " WHERE aggregate_type = 'CompletionSaga'")
    finally:
        await conn.close()
    assert result["events"] >= sum(before[f"{s}.events"] for s in ("cart", "order", "shipping", "payment")) - commands
    after = await counts(stack)
    assert after["view"] == before["view"] and after["lines"] == before["lines"]
    # Independently of any stream: 3 × 19.99 + Ground 10.00 − the 10off coupon.
    row = next(r for r in after["view"] if r["number"] == number)
    assert (row["item_total"], row["ship_total"], row["adjustment_total"]) == (
        Decimal("59.97"), Decimal("10.00"), Decimal("-10.00"))
    assert Decimal(total) == Decimal("59.97")
    # The services keep working on the rebuilt view.
    order = (await gateway.get(f"/api/orders/{number}", headers=ADMIN)).json()
    assert order["state"] == "complete" and order["total"] == total


async def test_a_dead_letter_replays_once_its_cause_is_fixed(gateway, stack):
    number = f"R9{time.time_ns() % 10**8:08d}"
    variant = VariantSnapshot(id=V1, product_id=1, name="Solidus T-Shirt", sku="TS-S", price=Decimal("19.99"),
                              track_inventory=True)
    orphan = envelope_for(LineItemAdded(order_number=number, line_item_id=900000000 + time.time_ns() % 10**8,
                                        variant=variant, quantity=1, price=Decimal("19.99")),
                          aggregate_type="Cart", aggregate_id=number, sequence=1)
    # The order view has no such order: the line cannot be stored (foreign key), so it is dead-lettered.
    await publish(stack.settings(), "cart.events", [(number.encode(), orphan.to_json(), orphan.kafka_headers())])
    deadline = time.monotonic() + 30
    while True:
        letters = json.loads(cli(stack, "dlq", "list", "--service", "order", "--json").stdout)
        mine = [d for d in letters if d["key"] == number]
        if mine:
            break
        assert time.monotonic() < deadline, "never dead-lettered"
        await asyncio.sleep(0.5)
    letter = mine[0]
    assert letter["consumer"] == "order.view" and "ForeignKeyViolation" in letter["error"]
    inspected = json.loads(cli(stack, "dlq", "inspect", str(letter["id"]), "--service", "order", "--json").stdout)
    assert str(orphan.event_id) in inspected["value"]

    conn = await asyncpg.connect(stack.database_url)
    try:  # the operator fixes the cause: the order the line belongs to now exists in the view
        await conn.execute('INSERT INTO "order".order_view (number, guest_token_digest, state, currency, created_at,'
                           " updated_at) VALUES ($1, 'x', 'cart', 'USD', now(), now())", number)
        cli(stack, "dlq", "replay", str(letter["id"]), "--service", "order")
        deadline = time.monotonic() + 30
        while not await conn.fetchval('SELECT count(*) FROM "order".order_line_items WHERE order_number = $1',
                                      number):
            assert time.monotonic() < deadline, "the replayed message was not applied"
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    replayed = json.loads(cli(stack, "dlq", "list", "--service", "order", "--json").stdout)
    assert next(d for d in replayed if d["id"] == letter["id"])["replayed_at"]
    purged = json.loads(cli(stack, "dlq", "purge", "--service", "order", "--id", str(letter["id"]), "--yes",
                            "--json").stdout)
    assert purged["purged"] == 1


async def test_outbox_status_shows_a_row_the_broker_refused_and_nothing_left_behind(gateway, stack):
    """A row too large for the broker (written past the store's bound) is parked by the
    payment service's running relay; the status names it, and counts nothing unpublished
    once the relays have published everything else."""
    await full_flow(gateway, card=CARD)  # the relays have just had work
    key = f"too-large-{time.time_ns()}"
    conn = await asyncpg.connect(stack.database_url)
    try:
        row_id = await conn.fetchval("INSERT INTO payment.outbox (topic, key, value, headers)"
                                     " VALUES ('payment.events', $1, $2, '[]') RETURNING id", key, b"x" * 2**21)
        try:
            deadline = time.monotonic() + 30
            while True:
                status = json.loads(cli(stack, "outbox", "status", "--json").stdout)
                mine = [r for r in status["payment"]["parked_rows"] if r["key"] == key]
                if mine and not any(s["unpublished"] for s in status.values()):
                    break
                assert time.monotonic() < deadline, status
                await asyncio.sleep(0.5)
            assert set(status) == {"cart", "order", "shipping", "payment"}
            [parked] = mine
            assert (parked["id"], parked["topic"], parked["bytes"]) == (row_id, "payment.events", 2**21)
            assert "TooLarge" in parked["error"] and status["payment"]["parked"] >= 1
            assert all(s["oldest_age_s"] == 0 for s in status.values())
            table = " ".join(cli(stack, "outbox", "status").stdout.split())  # as wrapped to the terminal
            assert f"payment outbox row {row_id} (payment.events, key {key}, {2**21} bytes)" in table
        finally:
            await conn.execute("DELETE FROM payment.outbox WHERE id = $1", row_id)
    finally:
        await conn.close()
    status = json.loads(cli(stack, "outbox", "status", "--json").stdout)
    assert all(r["key"] != key for r in status["payment"]["parked_rows"])


async def live_copies(stack, topics: list[str], wanted: set[str]) -> dict[str, set[tuple[str, int, bytes]]]:
    """Per event id of `wanted`: every (topic, partition, key) a copy of it is on, once each
    has at least one (the relay publishes shortly after the commit)."""
    deadline = time.monotonic() + 30
    while True:
        found: dict[str, set[tuple[str, int, bytes]]] = {}
        present = set(await every_topic(stack.settings()))
        for topic in topics:
            for record in await read_all(stack.settings(), topic) if topic in present else []:
                event_id = json.loads(record.value)["event_id"]
                if event_id in wanted:
                    found.setdefault(event_id, set()).add((topic, record.partition, record.key))
        if wanted <= found.keys():
            return found
        assert time.monotonic() < deadline, f"{len(wanted - found.keys())} events never published"
        await asyncio.sleep(0.3)


async def test_replayed_copies_keep_key_topic_and_partition(gateway, stack):
    """A replay sends each event where the relay did: the same topic, under the same key, so
    to the same partition; a compensating completion's too (a declined card). The saga
    appends no commands any more (its retired CompletionSaga streams are history only)."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        before = await conn.fetchval('SELECT coalesce(max(position), 0) FROM "order".events')
    finally:
        await conn.close()
    completed, *_ = await full_flow(gateway, card=CARD)
    declined, _, _, refused = await full_flow(gateway, card={**CARD, "number": "4000000000000002"})
    assert refused.status_code == 422, refused.text
    conn = await asyncpg.connect(stack.database_url)
    try:
        rows = await conn.fetch(
            'SELECT event_id::text, aggregate_type, aggregate_id FROM "order".events WHERE position > $1'
            ' AND (aggregate_id = ANY($2) OR aggregate_id IN (SELECT id FROM "order".sagas WHERE key = ANY($2)))',
            before, [completed, declined])
    finally:
        await conn.close()
    assert {r["aggregate_type"] for r in rows} == {"Order"}
    topics = ["order.events", "order.saga"]
    live = await live_copies(stack, topics, {r["event_id"] for r in rows})
    assert all(len(copies) == 1 for copies in live.values()), live
    for row in rows:  # live, every event of an order's completion is keyed by the order number
        (_, _, key), = live[row["event_id"]]
        assert key.decode() in {completed, declined}, row
        assert row["aggregate_type"] != "Order" or key.decode() == row["aggregate_id"], row

    replayed = json.loads(cli(stack, "replay", "--service", "order", "--from", str(before), "--json").stdout)
    assert replayed["replayed"] >= len(rows)
    copies = await live_copies(stack, topics, set(live))
    moved = {event_id: sorted(copies[event_id] - places) for event_id, places in live.items()
             if copies[event_id] != places}
    assert not moved, f"replayed copies elsewhere than the live ones: {moved}"
