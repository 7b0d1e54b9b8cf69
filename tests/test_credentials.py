"""Credentials stay with their owner (issue #23, 1-2): no guest token, card token or id that
opens an order travels in events, replays or logs; a GetCandy id names one entity of one dialect; each
dialect's routes reach only the orders it created (admins excepted)."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timezone

import pytest

from services.gateway.getcandy.ids import BASKET_LINES, BASKETS, ORDER_LINES, ORDERS, SHIPPING_LINES
from shared import db
from shared.contracts.order import guest_token_digest
from shared.envelope import EventEnvelope
from shared.kafka import TOPICS
from tests.helpers.cli import cli
from tests.helpers.getcandy import basket as candy_basket
from tests.helpers.getcandy import placed_ready_order
from tests.helpers.kafka import every_topic, read_all
from tests.helpers.solidus import ADMIN, CARD, full_flow

pytestmark = pytest.mark.usefixtures("getcandy_data")

NOT_FOUND = {"error": {"http_code": 404, "message": "Resource not found"}}


def record_bytes(record) -> bytes:
    return b"\0".join([record.key or b"", record.value or b"", *(v for _, v in record.headers or ())])


async def getcandy_checkout(gateway) -> list[str]:
    """A placed GetCandy order; every id its answers handed out (basket, basket line,
    order, order lines, shipping line)."""
    basket = await candy_basket(gateway, quantity=1)
    ids = [basket["id"], *(line["id"] for line in basket["lines"]["data"])]
    order_id = await placed_ready_order(gateway, quantity=1)
    processed = await gateway.post("/api/v1/orders/process?include=lines",
                                   json={"order_id": order_id, "payment_token": "OFFLINE"})
    assert processed.status_code in (200, 202), processed.text
    shown = (await gateway.get(f"/api/v1/orders/{order_id}?include=lines")).json()["data"]
    ids += [order_id, *(line["id"] for line in shown["lines"]["data"])]
    assert any(line["is_shipping"] for line in shown["lines"]["data"])
    return ids


@pytest.mark.both_topologies
async def test_no_topic_carries_a_guest_token_or_an_id_that_opens_an_order(gateway, system, stack):
    secrets = []
    for card in (CARD, None):  # a card checkout and a check one
        number, token, _, completed = await full_flow(gateway, card=card)
        assert completed.status_code == 200, completed.text
        secrets.append(token["X-Spree-Order-Token"])
    secrets += await getcandy_checkout(gateway)
    conn = await db.connect(stack.database_url, "payment")
    try:  # the gateway's tokens for the cards (they charge them): the payment service's alone
        card_tokens = [r["gateway_token"] for r in await conn.fetch("SELECT gateway_token FROM card_sources")]
    finally:
        await conn.close()
    assert card_tokens and all(len(t) >= 16 for t in card_tokens)
    secrets += card_tokens
    assert len(secrets) >= 7
    topics = await every_topic(stack.settings())
    assert set(TOPICS) <= set(topics)
    read = 0
    for topic in topics:
        for record in await read_all(stack.settings(), topic):
            read += 1
            raw = record_bytes(record)
            assert not [s for s in secrets if s.encode() in raw], (topic, record.value[:300])
    assert read > 50
    # What the events keep instead: the token's digest, which opens nothing.
    created = [json.loads(r.value) for r in await read_all(stack.settings(), "order.events")
               if dict(r.headers).get("event_type") == b"order.OrderCreated"]
    assert {guest_token_digest(secrets[0]), guest_token_digest(secrets[1])} <= {
        c["payload"]["guest_token_digest"] for c in created}
    assert {c["version"] for c in created} == {2}


async def test_the_access_log_names_routes_not_ids(gateway, system):
    ids = await getcandy_checkout(gateway)
    _, token, _, _ = await full_flow(gateway, card=None, complete=False)
    wanted = {"/api/v1/orders/{order_hash}", "/api/checkouts/{number}"}
    deadline = time.monotonic() + 10
    while True:  # the processes write a request's line as they answer it: wait for the last ones
        lines = [json.loads(line) for log in system.config.log_dir.glob("*.log")
                 for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
        routes = {line.get("route") for line in lines if line.get("logger") == "tillstream.access"}
        if wanted <= routes or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert wanted <= routes, sorted(r for r in routes if r)
    text = "\n".join(json.dumps(line) for line in lines)
    for secret in [*ids, token["X-Spree-Order-Token"]]:
        assert secret not in text, secret


async def test_a_stored_v1_order_created_reads_as_v2_its_token_works_and_no_republication_carries_it(
        gateway, system, stack):
    """An order created before v2 (its OrderCreated.v1 holds the token, in the store and in the
    outbox): it reads as v2, its guest still opens it, and neither the relay, a replay nor the
    CLI shows the token."""
    from services.order.projections import apply_to_view
    from shared.eventstore import EventStore
    from shared.kafka import events_topic

    number, token = f"R{uuid.uuid4().int % 10**9:09d}", "v1-guest-token-aaaaaaaa"
    v1 = EventEnvelope(event_id=uuid.uuid4(), type="order.OrderCreated", version=1, aggregate_type="Order",
                       aggregate_id=number, sequence=1, occurred_at=datetime.now(timezone.utc),
                       correlation_id="before-v2", payload={"number": number, "guest_token": token,
                                                            "currency": "USD", "email": None, "user_id": None})
    conn = await db.connect(stack.database_url, "order")
    try:
        async with conn.transaction():
            store = EventStore("order", events_topic("order"))
            await store.append_envelopes(conn, [v1], key=number, expected_version=0)
            await apply_to_view(conn, v1)  # the view as the live path built it then
        stored = await conn.fetchrow("SELECT version, payload FROM events WHERE event_id = $1", v1.event_id)
        assert stored["version"] == 1 and stored["payload"]["guest_token"] == token  # never rewritten
        assert await conn.fetchval("SELECT count(*) FROM order_view WHERE number = $1"
                                   " AND guest_token_digest = $2", number, guest_token_digest(token)) == 1
    finally:
        await conn.close()
    shown = await gateway.get(f"/api/orders/{number}", headers={"X-Spree-Order-Token": token})
    assert shown.status_code == 200 and shown.json()["token"] == token, shown.text
    wrong = await gateway.get(f"/api/orders/{number}", headers={"X-Spree-Order-Token": token[:-1] + "b"})
    assert wrong.status_code == 401
    added = await gateway.post(f"/api/checkouts/{number}/line_items", headers={"X-Spree-Order-Token": token},
                               json={"line_item": {"variant_id": 1, "quantity": 1}})
    assert added.status_code == 201, added.text
    # The service keeps only the digest: an admin without the token sees none.
    assert (await gateway.get(f"/api/orders/{number}", headers=ADMIN)).json()["token"] is None

    cli(stack, "replay", "--service", "order", "--json")
    copies = []
    for _ in range(100):  # the relay's copy and the replay's
        copies = [r for r in await read_all(stack.settings(), "order.events")
                  if dict(r.headers).get("event_id") == str(v1.event_id).encode()]
        if len(copies) >= 2:
            break
        await asyncio.sleep(0.1)
    assert len(copies) >= 2
    for record in copies:
        assert token.encode() not in record_bytes(record)
        assert dict(record.headers)["event_version"] == b"2"
        assert json.loads(record.value)["payload"]["guest_token_digest"] == guest_token_digest(token)
    story = cli(stack, "events", "read", "--order", number, "--json").stdout
    assert "guest_token_digest" in story and token not in story
    held = len(await read_all(stack.settings(), "order.events"))
    tailed = cli(stack, "events", "tail", "order.events", "--from-beginning", "--json", "--limit", str(held)).stdout
    assert str(v1.event_id) in tailed and token not in tailed


async def test_an_id_minted_for_one_entity_opens_nothing_else(gateway, system):
    """Each id the gateway hands out opens only its own kind of thing, and an id minted for one
    entity numbered like a real basket or order (a line's) is no id of that basket or order."""
    ids = await getcandy_checkout(gateway)
    basket_id, line_id, order_id = ids[0], ids[1], ids[2]
    number = BASKETS.decode(basket_id)[0]
    assert (await gateway.get(f"/api/v1/baskets/{basket_id}")).status_code == 200
    assert (await gateway.get(f"/api/v1/orders/{order_id}")).status_code == 200
    order_number = ORDERS.decode(order_id)[0]

    def as_basket(i):
        return gateway.get(f"/api/v1/baskets/{i}")

    def as_order(i):
        return gateway.get(f"/api/v1/orders/{i}")

    def as_basket_line(i):
        return gateway.put(f"/api/v1/basket-lines/{i}", json={"quantity": 1})

    attempts = [(as_basket, i) for i in ids if i != basket_id]
    attempts += [(as_order, i) for i in ids if i != order_id]
    attempts += [(as_basket_line, i) for i in ids if i != line_id]
    # Ids the gateway would mint for other entities with the numbers of a real basket and order.
    attempts += [(as_basket, kind.encode(number)) for kind in (BASKET_LINES, ORDER_LINES, SHIPPING_LINES, ORDERS)]
    attempts += [(as_order, kind.encode(order_number)) for kind in (BASKET_LINES, ORDER_LINES, SHIPPING_LINES,
                                                                     BASKETS)]
    attempts += [(as_basket_line, kind.encode(BASKET_LINES.decode(line_id)[0]))
                 for kind in (BASKETS, ORDERS, ORDER_LINES, SHIPPING_LINES)]
    for call, value in attempts:
        answer = await call(value)
        assert answer.status_code == 404 and answer.json() == NOT_FOUND, (call.__name__, value, answer.text)


@pytest.mark.both_topologies
async def test_each_dialect_reaches_only_its_own_orders_unless_an_admin_asks(gateway, system):
    solidus_number, token, _, _ = await full_flow(gateway, card=None, complete=False)
    candy_id = await placed_ready_order(gateway, quantity=1)
    candy_number = f"R{ORDERS.decode(candy_id)[0]:09d}"
    # A Solidus order through GetCandy's routes, with the id GetCandy would give it.
    for path in (f"/api/v1/orders/{ORDERS.encode(int(solidus_number[1:]))}",
                 f"/api/v1/baskets/{BASKETS.encode(int(solidus_number[1:]))}"):
        refused = await gateway.get(path)
        assert refused.status_code == 404 and refused.json() == NOT_FOUND, path
        assert (await gateway.get(path, headers=ADMIN)).status_code == 200, path
    process = await gateway.post("/api/v1/orders/process", json={
        "order_id": ORDERS.encode(int(solidus_number[1:])), "payment_token": "OFFLINE"})
    assert process.status_code == 404, process.text
    # A GetCandy order through Solidus's routes: unknown there, as any unknown number is.
    unknown = await gateway.get("/api/orders/R000000001", headers=token)
    for headers in ({}, token):
        refused = await gateway.get(f"/api/orders/{candy_number}", headers=headers)
        assert (refused.status_code, refused.json()) == (unknown.status_code, unknown.json()), refused.text
        changed = await gateway.put(f"/api/checkouts/{candy_number}/next", headers=headers)
        assert changed.status_code == 401, changed.text
    admin = await gateway.get(f"/api/orders/{candy_number}", headers=ADMIN)
    assert admin.status_code == 200 and admin.json()["number"] == candy_number
    assert (await gateway.get(f"/api/v1/orders/{candy_id}")).status_code == 200  # still its own dialect's


async def test_an_answer_shows_the_guest_token_only_to_whoever_presented_it(gateway, guest_order):
    """The service keeps only the token's digest: the token in an order's answer is the one the
    caller presented (header, body or query), checked against it; an admin without it sees none."""
    number, headers = guest_order
    token = headers["X-Spree-Order-Token"]
    added = await gateway.post(f"/api/checkouts/{number}/line_items", headers=headers,
                               json={"line_item": {"variant_id": 1, "quantity": 1}})
    assert added.status_code == 201, added.text
    answers = [await gateway.get(f"/api/orders/{number}", headers=headers),
               await gateway.get(f"/api/orders/{number}", params={"order_token": token}),
               await gateway.put(f"/api/checkouts/{number}/next", json={"order_token": token})]
    for answer in answers:
        assert answer.status_code == 200 and answer.json()["token"] == token, answer.text
    admin = await gateway.get(f"/api/orders/{number}", headers=ADMIN)
    assert admin.status_code == 200 and admin.json()["token"] is None
    both = await gateway.get(f"/api/orders/{number}", headers={**ADMIN, "X-Spree-Order-Token": token[::-1]})
    assert both.status_code == 200 and both.json()["token"] is None  # a wrong token is never echoed
