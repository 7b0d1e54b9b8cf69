"""A long event history for the rebuild benchmark: copies of the checkouts the run
recorded, under new order numbers, until the four stores hold the events asked for.

Copies are written straight into the stores (not the outbox: nothing is published), keep
every event's type, version, sequence, time and payload, and get fresh event ids, order
numbers and line item ids, so a rebuild folds them exactly like the originals.
"""
from __future__ import annotations

import uuid
from typing import Any

from tillstream.operations import SERVICES, connect, stored_events

_COLUMNS = ("event_id", "aggregate_type", "aggregate_id", "sequence", "type", "version", "occurred_at",
            "correlation_id", "causation_id", "payload")


def _renumber(value: Any, number: str, new_number: str, line_offset: int) -> Any:
    if isinstance(value, dict):
        return {k: (v + line_offset if k == "line_item_id" and isinstance(v, int)
                    else _renumber(v, number, new_number, line_offset)) for k, v in value.items()}
    if isinstance(value, list):
        return [_renumber(v, number, new_number, line_offset) for v in value]
    return new_number if value == number else value


async def grow(dsn: str, target: int, templates: int = 50) -> int:
    """Add copies of up to `templates` completed orders until the stores hold `target`
    events; returns how many events were added."""
    conn = await connect(dsn)
    try:
        have = await stored_events(conn)
        numbers = [r["number"] for r in await conn.fetch(
            "SELECT number FROM \"order\".order_view WHERE state = 'complete' ORDER BY number LIMIT $1", templates)]
        if have >= target or not numbers:
            return 0
        originals = {s: await conn.fetch(f'SELECT {", ".join(_COLUMNS)} FROM "{s}".events'
                                         " WHERE aggregate_id = ANY($1) ORDER BY position", numbers)
                     for s in SERVICES}
        per_copy = sum(len(rows) for rows in originals.values())
        line_stride = 1 + (await conn.fetchval(
            "SELECT coalesce(max((payload->>'line_item_id')::int), 0) FROM cart.events") or 0)
        added, copy = 0, 0
        while have + added < target:
            copy += 1
            for service, rows in originals.items():
                batch = []
                for row in rows:
                    number = row["aggregate_id"]
                    new_number = f"{number}-{copy}"
                    ids = {"event_id": uuid.uuid4(), "aggregate_id": new_number,
                           "payload": _renumber(row["payload"], number, new_number, line_stride * copy)}
                    batch.append(tuple(ids.get(c, row[c]) for c in _COLUMNS))
                await conn.executemany(
                    f'INSERT INTO "{service}".events ({", ".join(_COLUMNS)})'
                    f' VALUES ({", ".join(f"${i + 1}" for i in range(len(_COLUMNS)))})', batch)
            added += per_copy
        # As after any bulk load; otherwise autovacuum starts on these tables during the
        # rebuild that follows and competes with it for the two cores.
        for service in SERVICES:
            await conn.execute(f'VACUUM ANALYZE "{service}".events')
        return added
    finally:
        await conn.close()
