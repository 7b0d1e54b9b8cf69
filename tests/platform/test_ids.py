"""Ids drawn from a sequence in blocks (shared/ids.py), on real PostgreSQL."""
from __future__ import annotations

import asyncio

from shared import ids
from shared.db import create_pool


async def test_two_instances_drawing_at_once_never_hand_out_the_same_id(stack, pool, schema):
    await pool.execute("CREATE SEQUENCE widget_ids")
    other = await create_pool(stack.settings(), schema, min_size=1, max_size=4)  # a second instance
    try:
        drawn = await asyncio.gather(*(ids.next_id(p, "widget_ids") for _ in range(3 * ids.BLOCK)
                                       for p in (pool, other)))
    finally:
        await other.close()
    assert len(set(drawn)) == len(drawn) == 6 * ids.BLOCK
    # Each instance took whole blocks: three each, not one round trip per id.
    assert await pool.fetchval("SELECT last_value FROM widget_ids") <= 6 * ids.BLOCK + 2 * ids.BLOCK


async def test_one_instance_hands_out_a_block_in_ascending_order(pool):
    await pool.execute("CREATE SEQUENCE gadget_ids")
    first = [await ids.next_id(pool, "gadget_ids") for _ in range(ids.BLOCK)]
    assert first == sorted(first) and len(set(first)) == ids.BLOCK
    assert await pool.fetchval("SELECT last_value FROM gadget_ids") == ids.BLOCK
    assert await ids.next_id(pool, "gadget_ids") == ids.BLOCK + 1
