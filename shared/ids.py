"""Ids drawn from a PostgreSQL sequence in blocks, not one round trip each.

A checkout numbers its line items, addresses, payment and card, and a chosen rate: seven
`nextval` round trips when drawn one by one. Each process instead takes `BLOCK` values of
a sequence in one statement and hands them out in turn. Every id is still unique across
instances (each value of a sequence is drawn once); what is given up is order across
instances (a line added through another instance may get a lower id) and the values a
stopping process had not handed out (gaps, as a rolled-back `nextval` leaves anyway).
"""
from __future__ import annotations

import asyncio
from collections import deque

import asyncpg

BLOCK = 32

# Per pool: a pool is one service's connections to one database (its schema on the search
# path), so blocks drawn from one database are never handed out for another. Keyed by
# id() (asyncpg's Pool takes no weak reference) with the pool held, so no id is reused
# while its entry lives; a closed pool's entry goes at the next draw.
_blocks: dict[int, tuple[asyncpg.Pool, dict[str, tuple[deque[int], asyncio.Lock]]]] = {}


async def next_id(pool: asyncpg.Pool, sequence: str, *, on: asyncpg.Connection | None = None) -> int:
    """The next id of `sequence` (in the schema on the pool's search path). `on`: a connection
    of `pool` the caller holds (in a transaction, say), to draw a block on instead of taking
    another of the pool's while holding one (nextval is not undone by a rollback)."""
    if id(pool) not in _blocks:
        for key in [key for key, (held, _) in _blocks.items() if held.is_closing()]:
            del _blocks[key]
        _blocks[id(pool)] = (pool, {})
    waiting, drawing = _blocks[id(pool)][1].setdefault(sequence, (deque(), asyncio.Lock()))
    while not waiting:
        async with drawing:  # those who find it empty at once wait for one block, not one each
            if not waiting:
                rows = await (on or pool).fetch("SELECT nextval($1::regclass) AS id FROM generate_series(1, $2)",
                                                sequence, BLOCK)
                waiting.extend(sorted(r["id"] for r in rows))
    return waiting.popleft()
