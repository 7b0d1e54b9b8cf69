"""Issue #23, 7: a shipment number's existence is not told to whoever may not see it. Over
real HTTP: an unknown shipment answers exactly as another order's shipment does (401), to a
caller with no token and to one with another order's token; only an admin learns 404."""
from __future__ import annotations

import pytest

from tests.helpers.solidus import ADMIN, in_delivery

pytestmark = pytest.mark.both_topologies


async def test_unknown_and_unauthorised_shipments_answer_alike(gateway, guest_order):
    number, token = guest_order
    shipment = (await in_delivery(gateway, number, token))["shipments"][0]["number"]
    other = (await gateway.post("/api/orders", json={})).json()
    other_token = {"X-Spree-Order-Token": other["token"]}
    unknown = "H" + ("0" if shipment[1] != "0" else "1") + shipment[2:]

    async def answers(shipment_number: str, headers: dict) -> list[tuple[int, dict]]:
        rates = await gateway.get(f"/api/shipments/{shipment_number}/estimated_rates", headers=headers)
        select = await gateway.put(f"/api/shipments/{shipment_number}/select_shipping_method", headers=headers,
                                   json={"shipping_method_id": 2})
        return [(rates.status_code, rates.json()), (select.status_code, select.json())]

    refused = [(401, {"error": "You are not authorized to perform that action."})] * 2
    for headers in ({}, other_token):
        assert await answers(shipment, headers) == refused
        assert await answers(unknown, headers) == refused
    assert (await gateway.get(f"/api/shipments/{shipment}/estimated_rates", headers=token)).status_code == 200
    assert (await gateway.get(f"/api/shipments/{unknown}/estimated_rates", headers=ADMIN)).status_code == 404
