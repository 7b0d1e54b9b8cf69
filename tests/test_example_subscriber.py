"""The example subscriber (examples/order_notifier.py) as a real process: it sees every
event of an order once, in order, even when the events are published again."""
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
    finally:
        notifier.terminate()
        notifier.wait(10)
