"""Card numbers are never stored, published or logged: after card checkouts in both
dialects (one approved, one declined), no table of any service, no message on any topic
and no process log holds a number."""
from __future__ import annotations

import asyncpg
import pytest

from shared.kafka import EVENT_TOPICS
from tests.helpers.getcandy import placed_ready_order
from tests.helpers.kafka import read_topic
from tests.helpers.solidus import CARD, full_flow

# Its GetCandy orders need GetCandy's catalogue.
pytestmark = pytest.mark.usefixtures("getcandy_data")

NUMBERS = ("4111111111111111", "4000000000000002")


async def columns_holding(conn: asyncpg.Connection, needle: str) -> list[str]:
    """Every column of every table of the services' schemas in which `needle` appears."""
    found = []
    columns = await conn.fetch(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema IN ('cart', 'order', 'shipping', 'payment')"
        " AND data_type IN ('text', 'jsonb', 'json', 'bytea', 'character varying')")
    for column in columns:
        name = f'"{column["table_schema"]}"."{column["table_name"]}"'
        value = f'"{column["column_name"]}"'
        condition = (f"position($1::bytea in {value}) > 0" if column["data_type"] == "bytea"
                     else f"{value}::text LIKE '%' || $1 || '%'")
        if await conn.fetchval(f"SELECT count(*) FROM {name} WHERE {condition}", needle.encode()
                               if column["data_type"] == "bytea" else needle):
            found.append(f"{name}.{value}")
    return found


async def test_no_card_number_in_any_table_message_or_log(gateway, system, stack):
    _, _, _, approved = await full_flow(gateway, card=CARD)
    assert approved.status_code == 200
    _, _, _, declined = await full_flow(gateway, card={**CARD, "number": "4000000000000002"})
    assert declined.status_code == 422
    card_type = (await gateway.get("/api/v1/payments/types")).json()["data"][0]["id"]
    for token in ("tok_ok", "tok_declined"):  # GetCandy's tokens stand for the same two numbers
        order_id = await placed_ready_order(gateway, quantity=1)
        await gateway.post("/api/v1/orders/process",
                           json={"order_id": order_id, "payment_type_id": card_type, "payment_token": token})
    conn = await asyncpg.connect(stack.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM payment.card_tokens") >= 4  # the cards were seen
        for number in NUMBERS:
            assert await columns_holding(conn, number) == [], number
    finally:
        await conn.close()
    for topic in EVENT_TOPICS:
        for record in await read_topic(stack.settings(), topic, until_count=1, timeout=10):
            assert not any(number.encode() in record.value for number in NUMBERS), topic
    for log in (system.config.log_dir).glob("*.log"):
        text = log.read_text(errors="replace")
        assert not any(number in text for number in NUMBERS), log.name


async def test_neighbouring_getcandy_ids_name_nothing(gateway):
    """GetCandy guests reach an order by its id alone: ids of the numbers around a real one,
    in the original's form or with a forged tag, and the real id changed by one character,
    find nothing."""
    import secrets

    from hashids import Hashids

    from services.gateway.getcandy.ids import ALPHABET, BASKETS, ORDERS, TAG_LENGTH

    order_id = await placed_ready_order(gateway, quantity=1)
    assert (await gateway.get(f"/api/v1/orders/{order_id}")).status_code == 200
    number = ORDERS.decode(order_id)[0]
    legacy = {"order": Hashids(salt="order", min_length=8, alphabet=ALPHABET),
              "basket": Hashids(salt="basket", min_length=8, alphabet=ALPHABET)}
    guesses = []
    for neighbour in range(number - 25, number + 26):
        for kind, path in (("order", "orders"), ("basket", "baskets")):
            plain = legacy[kind].encode(neighbour)
            guesses.append(f"/api/v1/{path}/{plain}")  # the original's id
            guesses.append(f"/api/v1/{path}/{plain}{''.join(secrets.choice(ALPHABET) for _ in range(TAG_LENGTH))}")
    flipped = order_id[:-1] + ("a" if order_id[-1] != "a" else "b")
    guesses.append(f"/api/v1/orders/{flipped}")
    guesses.append(f"/api/v1/baskets/{BASKETS.hashids.encode(number)}")
    for path in guesses:
        response = await gateway.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": {"http_code": 404, "message": "Resource not found"}}


@pytest.mark.both_topologies
async def test_a_services_operations_need_the_service_credential(system):
    """Reference-data loaders and every other operation answer only callers holding the
    install's service credential; a wrong one is refused without echo."""
    import httpx

    url = f"{system.service_url('cart')}/bus/load_promotions"
    body = {"promotions": [{"id": 999_999, "name": "Free", "code": "free", "kind": "order_flat", "value": "1000"}]}
    async with httpx.AsyncClient() as client:
        for headers in ({}, {"X-Service-Key": ""}, {"X-Service-Key": "test-service-kez"}):
            refused = await client.post(url, json=body, headers=headers)
            assert refused.status_code == 401, refused.text
            assert "test-service" not in refused.text
        answered = await client.post(f"{system.service_url('cart')}/bus/list_products",
                                     json={}, headers={"X-Service-Key": system.config.gateway_key})
    assert answered.status_code == 200 and answered.json()
    conn = await asyncpg.connect(system.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM cart.promotions WHERE code = 'free'") == 0
    finally:
        await conn.close()
