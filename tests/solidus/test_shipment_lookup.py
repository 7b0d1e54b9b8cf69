"""A shipment named by its number (select_shipping_method, estimated rates): found from what
the shipping service of this process knows (its order for good; its shipments as this process
last committed them) without reading the stream, and read when it does not know it."""
from __future__ import annotations

import asyncpg
import pytest

from tests.helpers.solidus import in_delivery

# The shipping service's stream read and shipment-number lookup, as pg_stat_statements keeps them.
STREAM_READ = '%FROM "shipping".events WHERE%'
INDEX_READ = "SELECT order_number FROM shipment_index WHERE number = $1"


async def shipping_reads(conn) -> tuple[int, int]:
    stream = await conn.fetchval("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE $1",
                                 STREAM_READ)
    index = await conn.fetchval("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query = $1",
                                INDEX_READ)
    return int(stream), int(index)


@pytest.mark.both_topologies
async def test_selecting_a_method_reads_nothing_the_process_knows_and_still_selects_it(gateway, guest_order, stack,
                                                                                    system):
    number, token = guest_order
    order = await in_delivery(gateway, number, token)
    shipment = order["shipments"][0]
    express = shipment["shipping_rates"][-1]
    conn = await asyncpg.connect(stack.database_url)
    try:
        if "pg_stat_statements" not in await conn.fetchval("SELECT current_setting('shared_preload_libraries')"):
            pytest.skip("the database does not load pg_stat_statements")
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        before = await shipping_reads(conn)
        selected = await gateway.put(f"/api/shipments/{shipment['number']}/select_shipping_method", headers=token,
                                     json={"shipping_method_id": express["shipping_method_id"]})
        after = await shipping_reads(conn)
        rates = await gateway.get(f"/api/shipments/{shipment['number']}/estimated_rates", headers=token)
    finally:
        await conn.close()
    assert selected.status_code == 200, selected.text
    assert [r["shipping_method_id"] for r in selected.json()["shipping_rates"] if r["selected"]] == \
        [express["shipping_method_id"]]
    assert rates.status_code == 200 and rates.json()["shipping_rates"]
    if not system.distributed:
        # One process built the shipments: it knows them (before: the lookup, and two stream reads).
        assert (after[0] - before[0], after[1] - before[1]) == (0, 0)
    # An unknown shipment is still refused like another order's.
    unknown = await gateway.put("/api/shipments/H00000000000/select_shipping_method", headers=token,
                                json={"shipping_method_id": express["shipping_method_id"]})
    assert unknown.status_code == 401
