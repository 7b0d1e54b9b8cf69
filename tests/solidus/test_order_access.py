"""The access facts a gateway keeps of each order (services/gateway/order_access.py): the
routes that only authorise a caller are served from them, and who may call stays as it was,
in both topologies and across gateways."""
from __future__ import annotations

import contextlib
import secrets

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.getcandy.ids import BASKETS, order_number
from services.order import commands
from services.order.app import definition as order_service
from shared.db import create_pool
from shared.eventstore import EventStore
from shared.kafka import events_topic
from shared.service import ServiceContext
from tests.helpers.getcandy import basket
from tests.helpers.processes import start_gateway
from tests.helpers.solidus import ADMIN, V1, in_delivery
from tests.helpers.statements import calls, counting_statements
from tillstream.stack import stop_process

MUG = 3  # a second demo variant
UNAUTHORIZED = {"error": "You are not authorized to perform that action."}
# The statements that read an order: the whole view (services/order/view.py `read_order`)
# and its access facts alone (`read_access_facts`), as pg_stat_statements keeps their text.
VIEW_READ = "%FROM order_view v%LEFT JOIN tax_rates%"
FACTS_READ = "SELECT number, dialect, guest_token_digest, currency FROM order_view WHERE number = $1"


def token_of(order: dict) -> dict[str, str]:
    return {"X-Spree-Order-Token": order["token"]}


def add_line(client, number: str, headers: dict, variant_id: int = V1):
    return client.post(f"/api/checkouts/{number}/line_items", headers=headers,
                       json={"line_item": {"variant_id": variant_id, "quantity": 1}})


@contextlib.contextmanager
def second_gateway(system, **env):
    """A gateway process of its own beside the system's, with its own cache: (public URL,
    internal URL)."""
    proc, url, internal_url = start_gateway(system, **env)
    try:
        yield url, internal_url
    finally:
        stop_process(proc)


@pytest.mark.both_topologies
async def test_a_wrong_token_is_refused_however_long_the_order_is_kept(gateway, guest_order):
    number, token = guest_order
    order = await in_delivery(gateway, number, token)  # a line added: the order's facts are kept by now
    line_id, shipment = order["line_items"][0]["id"], order["shipments"][0]["number"]
    other = (await gateway.post("/api/orders", json={})).json()
    wrong_tokens = [{"X-Spree-Order-Token": "nope"}, token_of(other), {},
                    {"X-Spree-Order-Token": token["X-Spree-Order-Token"] + "x"},
                    {"X-Spree-Order-Token": "x" * 65}]
    for headers in wrong_tokens:
        attempts = [
            await add_line(gateway, number, headers),
            await gateway.patch(f"/api/checkouts/{number}/line_items/{line_id}", headers=headers,
                                json={"line_item": {"quantity": 5}}),
            await gateway.delete(f"/api/checkouts/{number}/line_items/{line_id}", headers=headers),
            await gateway.put(f"/api/orders/{number}/empty", headers=headers),
            await gateway.post(f"/api/orders/{number}/coupon_codes", headers=headers, json={"coupon_code": "10off"}),
            await gateway.delete(f"/api/orders/{number}/coupon_codes/10off", headers=headers),
            await gateway.get(f"/api/orders/{number}/payments/new", headers=headers),
            await gateway.put(f"/api/shipments/{shipment}/select_shipping_method", headers=headers,
                              json={"shipping_method_id": 2}),
        ]
        for response in attempts:
            assert (response.status_code, response.json()) == (401, UNAUTHORIZED), (response.request.url, headers)
    # The other order's own token opens only the other order.
    assert (await add_line(gateway, other["number"], token_of(other))).status_code == 201
    # The right token, in the body as Solidus also takes it, and the admin key still pass.
    by_body = await gateway.post(f"/api/checkouts/{number}/line_items", json={
        "order_token": token["X-Spree-Order-Token"], "line_item": {"variant_id": MUG, "quantity": 1}})
    assert by_body.status_code == 201, by_body.text
    assert (await gateway.get(f"/api/orders/{number}/payments/new", headers=ADMIN)).status_code == 200
    shown = (await gateway.get(f"/api/orders/{number}", headers=token)).json()
    # As a set: apart, each cart instance hands out line ids from its own block, and Solidus
    # orders lines by id, so a line added later may come first.
    assert sorted((item["variant_id"], item["quantity"]) for item in shown["line_items"]) == sorted([(V1, 1), (MUG, 1)])


@pytest.mark.both_topologies
@pytest.mark.usefixtures("getcandy_data")
async def test_a_kept_getcandy_order_is_unknown_to_a_solidus_guest(gateway):
    """The dialect is one of the facts kept: another dialect's order stays out of reach of
    these routes (an admin excepted), as when it was read from the view."""
    number = order_number(BASKETS, (await basket(gateway, quantity=1))["id"])
    assert number is not None  # the basket's creation showed the order: its facts are kept
    for headers in ({"X-Spree-Order-Token": "guess"}, {}):
        refused = await gateway.get(f"/api/orders/{number}/payments/new", headers=headers)
        assert (refused.status_code, refused.json()) == (401, UNAUTHORIZED)
        refused = await add_line(gateway, number, headers)
        assert (refused.status_code, refused.json()) == (401, UNAUTHORIZED)
    assert (await gateway.get(f"/api/orders/{number}/payments/new", headers=ADMIN)).status_code == 200


@contextlib.asynccontextmanager
async def order_instance(stack):
    """Another instance of the order service, in this process, on the system's own schema."""
    pool = await create_pool(stack.settings(), "order", min_size=1, max_size=2)
    store = EventStore("order", events_topic("order"))
    ctx = order_service.build(ServiceContext("order", stack.settings(), pool, store,
                                             peers={name: object() for name in order_service.peers}))
    try:
        yield ctx
    finally:
        await ctx.close()
        await pool.close()


@pytest.mark.both_topologies
async def test_an_unknown_number_is_found_once_another_instance_creates_it(gateway, stack, monkeypatch):
    """An unknown number is never kept as absent: the order may be created a moment later,
    by an instance the gateway never asked."""
    number = "R" + "".join(secrets.choice("0123456789") for _ in range(9))
    url = f"/api/orders/{number}/payments/new"
    assert (await gateway.get(url, headers=ADMIN)).status_code == 404
    guessed = await gateway.get(url, headers={"X-Spree-Order-Token": "guess"})
    assert (guessed.status_code, guessed.json()) == (401, UNAUTHORIZED)

    monkeypatch.setattr(commands, "new_order_number", lambda: number)
    async with order_instance(stack) as ctx:
        created, token = await commands.create_order(ctx, dialect="solidus")
    assert created.aggregate.id == number
    headers = {"X-Spree-Order-Token": token}
    assert (await gateway.get(url, headers=headers)).status_code == 200
    assert (await gateway.get(url, headers=ADMIN)).status_code == 200
    added = await add_line(gateway, number, headers)
    assert added.status_code == 201 and added.json()["variant_id"] == V1, added.text
    assert (await gateway.get(url, headers={"X-Spree-Order-Token": "guess"})).status_code == 401


@pytest.mark.both_topologies
async def test_an_order_kept_by_one_gateway_is_served_alike_by_another(gateway, system):
    with second_gateway(system) as (url, _):
        async with httpx.AsyncClient(base_url=url, timeout=30) as other:
            stranger = token_of((await gateway.post("/api/orders", json={})).json())  # another order's token
            for creator, user in ((gateway, other), (other, gateway)):
                order = (await creator.post("/api/orders", json={})).json()  # kept by its creator
                number, token = order["number"], token_of(order)
                first, second = await add_line(creator, number, token), await add_line(user, number, token, MUG)
                assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
                assert first.json()["variant_id"] == V1 and second.json()["variant_id"] == MUG
                assert set(first.json()) == set(second.json()) and second.json()["display_amount"].startswith("$")
                for client in (creator, user):
                    refused = await add_line(client, number, {"X-Spree-Order-Token": "nope"})
                    assert (refused.status_code, refused.json()) == (401, UNAUTHORIZED)
                    assert (await add_line(client, number, stranger)).status_code == 401
                shown = (await user.get(f"/api/orders/{number}", headers=token)).json()
                # (Apart, each cart instance hands out line ids from its own block: not in creation order.)
                assert sorted(item["variant_id"] for item in shown["line_items"]) == sorted([V1, MUG])


async def statement_calls(conn) -> tuple[int, int]:
    """How often the order's view, and its access facts alone, have been read (all processes)."""
    return await calls(conn, VIEW_READ), await calls(conn, FACTS_READ, exact=True)


@pytest.mark.both_topologies
async def test_a_line_item_reads_the_order_once_per_gateway_and_never_its_view(gateway, system, stack):
    """Issue #26: adding a line read the whole order view to check the guest's token."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        await counting_statements(conn)
        with second_gateway(system) as (url, _):
            async with httpx.AsyncClient(base_url=url, timeout=30) as other:
                order = (await gateway.post("/api/orders", json={})).json()
                number, token = order["number"], token_of(order)
                counts = [await statement_calls(conn)]
                for client, variant in ((other, V1), (other, MUG), (gateway, V1), (gateway, MUG)):
                    assert (await add_line(client, number, token, variant)).status_code == 201
                    counts.append(await statement_calls(conn))
                assert (await other.get(f"/api/orders/{number}", headers=token)).status_code == 200
                counts.append(await statement_calls(conn))
    finally:
        await conn.close()
    reads = [(view - view_before, facts - facts_before)
             for (view_before, facts_before), (view, facts) in zip(counts, counts[1:], strict=False)]
    assert reads == [
        (0, 1),  # a gateway that never saw the order reads its facts, once
        (0, 0),  # ... and then nothing
        (0, 0), (0, 0),  # the gateway that created it kept them from the creation's answer
        (1, 0),  # showing the order reads its view: what the counts above would have seen
    ]


def cache_metrics(internal_url: str) -> dict[str, float]:
    text = httpx.get(f"{internal_url}/metrics", timeout=10).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tillstream_gateway_order_access_reads_total":
                found[sample.labels["outcome"]] = sample.value
            elif sample.name == "tillstream_gateway_order_access_entries":
                found["entries"] = sample.value
    return found


async def test_a_gateway_keeps_no_more_orders_than_its_bound(gateway, system):
    orders = [(await gateway.post("/api/orders", json={})).json() for _ in range(3)]
    with second_gateway(system, GATEWAY_ORDER_ACCESS_ENTRIES="2") as (url, internal_url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as other:
            async def authorised(i: int) -> dict[str, float]:
                response = await other.get(f"/api/orders/{orders[i]['number']}/payments/new",
                                           headers=token_of(orders[i]))
                assert response.status_code == 200, response.text
                return cache_metrics(internal_url)

            for i in range(3):
                await authorised(i)
            assert cache_metrics(internal_url) == {"miss": 3, "hit": 0, "unknown": 0, "entries": 2}
            assert (await authorised(2))["hit"] == 1  # the most recent is kept
            after = await authorised(0)  # the least recently used went first
            assert (after["miss"], after["entries"]) == (4, 2)
            assert (await authorised(2))["hit"] == 2
            assert (await authorised(1))["miss"] == 5  # pushed out by the first's return
            refused = await other.get(f"/api/orders/{orders[1]['number']}/payments/new",
                                      headers=token_of(orders[0]))
            assert (refused.status_code, refused.json()) == (401, UNAUTHORIZED)
            unknown = await other.get("/api/orders/R000000002/payments/new", headers={"X-Spree-Order-Token": "x"})
            assert (unknown.status_code, unknown.json()) == (401, UNAUTHORIZED)
            assert cache_metrics(internal_url) == {"miss": 5, "hit": 3, "unknown": 1, "entries": 2}
