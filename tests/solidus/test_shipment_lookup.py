"""A shipment named by its number (select_shipping_method, estimated rates): found from what
the shipping service of this process knows (its order for good; its shipments as this process
last committed them) without reading the stream, and read when it does not know it."""
from __future__ import annotations

import asyncpg
import pytest

from tests.helpers.solidus import in_delivery
from tests.helpers.statements import calls, counting_statements

# The shipping service's stream read and shipment-number lookup, as pg_stat_statements keeps them.
STREAM_READ = '%FROM "shipping".events WHERE%'
INDEX_READ = "SELECT order_number FROM shipment_index WHERE number = $1"


async def shipping_reads(conn) -> tuple[int, int]:
    return await calls(conn, STREAM_READ), await calls(conn, INDEX_READ, exact=True)


@pytest.mark.both_topologies
async def test_selecting_a_method_reads_nothing_the_process_knows_and_still_selects_it(gateway, guest_order, stack,
                                                                                    system):
    number, token = guest_order
    order = await in_delivery(gateway, number, token)
    shipment = order["shipments"][0]
    express = shipment["shipping_rates"][-1]
    conn = await asyncpg.connect(stack.database_url)
    try:
        await counting_statements(conn)
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
