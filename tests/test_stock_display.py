"""The stock a storefront is shown is current after a completion through the same gateway:
the per-process display cache (services/gateway/availability.py) forgets what a completion
changed, instead of showing the count it held up to STOCK_DISPLAY_MAX_AGE_MS longer."""
from __future__ import annotations

from tests.helpers.solidus import full_flow

LAST_THREE = 910


async def shown(gateway, variant_id: int) -> int:
    response = await gateway.get(f"/api/variants/{variant_id}")
    assert response.status_code == 200, response.text
    return response.json()["total_on_hand"]


async def test_a_read_right_after_completions_shows_the_stock_they_left(gateway, system):
    await system.acall("cart", "load_catalog", products=[
        {"id": LAST_THREE, "name": "Last Three", "slug": "last-three",
         "variants": [{"id": LAST_THREE, "sku": "LAST-3", "name": "Last Three", "prices": {"USD": "5.00"}}]}])
    await system.acall("shipping", "load_reference", stock_locations=[
        {"id": 1, "name": "Main Warehouse", "stock": [{"variant_id": LAST_THREE, "count_on_hand": 3}]}])
    confirmed = [await full_flow(gateway, card=None, variant_id=LAST_THREE, coupon=None, complete=False)
                 for _ in range(3)]
    assert await shown(gateway, LAST_THREE) == 3  # now in the display cache
    for number, token, _, _ in confirmed:
        completed = await gateway.put(f"/api/checkouts/{number}/complete", headers=token)
        assert completed.status_code == 200, completed.text
    assert await shown(gateway, LAST_THREE) == 0
