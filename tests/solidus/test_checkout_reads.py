"""Issue #26: a checkout update that moves the order on (`PATCH /checkouts/{n}` with the
addresses) reads the order view only to authorise the caller and to answer: the step's facts
are the view as the update's own statement left it (OrderService.update_and_advance)."""
from __future__ import annotations

import asyncpg

from tests.helpers.solidus import ADDRESS, in_address
from tests.helpers.statements import calls, counting_statements

VIEW_READ = "%FROM order_view v%LEFT JOIN tax_rates%"


async def view_reads(conn) -> int:
    return await calls(conn, VIEW_READ)


async def test_an_address_update_that_moves_on_reads_the_view_to_authorise_and_to_answer(gateway, guest_order, stack):
    number, token = guest_order
    await in_address(gateway, number, token)
    conn = await asyncpg.connect(stack.database_url)
    try:
        await counting_statements(conn)
        before = await view_reads(conn)
        response = await gateway.patch(f"/api/checkouts/{number}", headers=token, json={"order": {
            "email": "ada@example.com", "bill_address_attributes": ADDRESS, "ship_address_attributes": ADDRESS}})
        after = await view_reads(conn)
    finally:
        await conn.close()
    assert response.status_code == 200, response.text
    order = response.json()
    assert order["state"] == "delivery" and order["email"] == "ada@example.com" and order["shipments"]
    # Authorising (its state decides what the update means) and the answer after shipping's; not the step's facts.
    assert after - before == 2


async def test_an_update_stands_when_the_step_after_it_is_refused(gateway, guest_order):
    number, token = guest_order
    await in_address(gateway, number, token)
    # An address but no email: the address is kept, the step to delivery is refused.
    response = await gateway.patch(f"/api/checkouts/{number}", headers=token,
                                   json={"order": {"bill_address_attributes": ADDRESS,
                                                   "ship_address_attributes": ADDRESS}})
    shown = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    assert response.status_code == 422, response.text
    assert shown["state"] == "address" and shown["ship_address"]["zipcode"] == ADDRESS["zipcode"]
