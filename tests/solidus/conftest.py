from __future__ import annotations

import pytest

V1 = 1  # demo variant priced 19.99
ADMIN = {"Authorization": "Bearer test-admin-key"}


@pytest.fixture
async def guest_order(gateway):
    """A new guest order: (number, headers carrying its token)."""
    response = await gateway.post("/api/orders", json={})
    assert response.status_code == 201, response.text
    body = response.json()
    return body["number"], {"X-Spree-Order-Token": body["token"]}
