"""The example subscriber (examples/order_notifier.py) as a real process: it sees every
event of an order once, in order, even when the events are published again, and nothing
but orders' own events: every notification names an order, in that order's sequence."""
from __future__ import annotations

import ast
import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from tests.helpers.solidus import full_flow

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "order_notifier.py"


def test_the_example_imports_only_the_contract():
    tree = ast.parse(EXAMPLE.read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.startswith("services") for m in modules if m)
    assert {m for m in modules if m and m.startswith("shared")} <= {"shared.contracts", "shared.contracts.order",
                                                                     "shared.envelope"}


async def test_the_notifier_sees_every_order_event_once_in_order(gateway, stack, tmp_path):
    db = tmp_path / "notifications.sqlite3"
    conn = await asyncpg.connect(stack.database_url)
    try:
        before = await conn.fetchval('SELECT coalesce(max(position), 0) FROM "order".events')
    finally:
        await conn.close()
    notifier = subprocess.Popen([sys.executable, "-m", "examples.order_notifier", "--db", str(db),
                                 "--bootstrap", stack.bootstrap_servers, "--group", f"notifier-{time.time_ns()}"],
                                stdout=subprocess.DEVNULL)
    try:
        number, _, _, complete = await full_flow(gateway, card=None)
        assert complete.status_code == 200
        conn = await asyncpg.connect(stack.database_url)
        try:
            stored = [r["event_id"] for r in await conn.fetch(
                'SELECT event_id FROM "order".events WHERE aggregate_id = $1 ORDER BY sequence', number)]
            # Publish the order's events a second time: the notifier must not notify twice.
            await conn.execute(
                'INSERT INTO "order".outbox (topic, key, value, headers) SELECT topic, key, value, headers FROM ('
                " SELECT 'order.events' AS topic, aggregate_id AS key, convert_to(json_build_object("
                " 'event_id', event_id, 'type', type, 'version', version, 'aggregate_type', aggregate_type,"
                " 'aggregate_id', aggregate_id, 'sequence', sequence, 'occurred_at', occurred_at,"
                " 'correlation_id', correlation_id, 'causation_id', causation_id, 'payload', payload)::text, 'UTF8')"
                " AS value, '[]'::jsonb AS headers FROM \"order\".events WHERE aggregate_id = $1 ORDER BY sequence) t",
                number)
            await conn.execute("SELECT pg_notify('order_outbox', '')")
        finally:
            await conn.close()

        def seen() -> list[tuple]:
            if not db.exists():
                return []
            with sqlite3.connect(db) as lite:
                return lite.execute("SELECT event_id, sequence, message FROM notifications"
                                    " WHERE order_number = ? ORDER BY rowid", (number,)).fetchall()

        deadline = time.monotonic() + 45
        while len(seen()) < len(stored):
            assert notifier.poll() is None, "the notifier exited"
            assert time.monotonic() < deadline, f"{len(seen())} of {len(stored)} events seen"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # time for the duplicates to arrive (and be ignored)
        rows = seen()
        assert [r[0] for r in rows] == [str(e) for e in stored]  # each once, in the order's sequence
        assert [r[1] for r in rows] == list(range(1, len(stored) + 1))
        assert rows[0][2] == f"Order {number} was started" and "was placed" in rows[-1][2]
        await every_notification_names_an_order_in_its_sequence(stack, db, number, before)
    finally:
        notifier.terminate()
        notifier.wait(10)


async def every_notification_names_an_order_in_its_sequence(stack, db: Path, number: str, before: int) -> None:
    """Every row the notifier wrote (it read the topic from the beginning) is an order's own
    event under that order's number, each order's rows are its sequence 1..k, and those of
    events stored since the test began name the test's order."""
    with sqlite3.connect(db) as lite:
        rows = lite.execute("SELECT event_id, order_number, sequence FROM notifications ORDER BY rowid").fetchall()
    conn = await asyncpg.connect(stack.database_url)
    try:
        stored = {str(r["event_id"]): r for r in await conn.fetch(
            'SELECT event_id, aggregate_type, aggregate_id, sequence, position FROM "order".events'
            " WHERE event_id = ANY($1::uuid[])", [r[0] for r in rows])}
    finally:
        await conn.close()
    sequences: dict[str, list[int]] = {}
    for event_id, order_number, sequence in rows:
        event = stored[event_id]
        assert (event["aggregate_type"], event["aggregate_id"], event["sequence"]) == ("Order", order_number, sequence)
        if event["position"] > before:
            assert order_number == number, f"a notification for {order_number}, not an order of this test"
        sequences.setdefault(order_number, []).append(sequence)
    for order_number, seen in sequences.items():
        assert seen == list(range(1, len(seen) + 1)), (order_number, seen)


async def test_the_notifier_holds_an_event_until_the_earlier_ones_of_its_order_arrive(tmp_path):
    from examples.order_notifier import OrderNotifier
    from shared.contracts.order import OrderCanceled, OrderEmailChanged
    from shared.envelope import envelope_for

    notifier = OrderNotifier(str(tmp_path / "n.sqlite3"), "127.0.0.1:1")
    events = [envelope_for(event, aggregate_type="Order", aggregate_id="R1", sequence=n) for n, event in
              enumerate([OrderEmailChanged(number="R1", email="a@b.c"), OrderEmailChanged(number="R1", email="d@e.f"),
                         OrderCanceled(number="R1", completion_request_id="c1")], start=1)]

    def receive(envelope) -> list[int]:
        ready = notifier.receive("R1", envelope)
        for event in ready:
            notifier.record(event)
        return [e.sequence for e in ready]

    assert receive(events[0]) == [1]
    assert receive(events[2]) == []  # 2 is missing: 3 waits
    assert receive(events[0]) == []  # a redelivery
    assert receive(events[1]) == [2, 3]
    notice = envelope_for(OrderCanceled(number="R1", completion_request_id="c1"), aggregate_type="DeadLetter",
                          aggregate_id="x/1", sequence=1)
    assert notifier.receive("x/1", notice) == []  # not an order's event
    await notifier.consumer.stop()

