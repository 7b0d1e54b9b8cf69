"""Issue #26.3 (plan S10): an order command's write is one statement, with no BEGIN/COMMIT: the
order view's changes (recorded by BufferedOrderView) and the append travel together in
`project_and_append_events` (services/order/migrations/010_project_and_append.sql). It must
leave the view exactly as the transactional path (SqlOrderView) does, notify the same, be
atomic, still conflict on a concurrent append, and fall back when a fold reads the view."""
from __future__ import annotations

import asyncio
import contextlib
import uuid
from decimal import Decimal

import asyncpg
import pytest

from services.order import commands, projections
from services.order.app import definition as order_service
from services.order.commands import project
from services.order.projections import apply_to_view, view_changes
from shared import context, db
from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import shipping as s
from shared.db import create_pool
from shared.envelope import envelope_for
from shared.eventstore import ConcurrencyConflict, EventStore
from shared.inline import InlineProjection, forget_inline, project_inline
from shared.kafka import events_topic
from shared.service import ServiceContext
from tests.conftest import ROOT, fresh_schema

FUNCTION = project.function
ADDRESS = o.Address(id=7, name="Ann O'Neil", address1="1 Main St", city="Springfield", zipcode="12345",
                    phone="555-0100", country_id=1, country_iso="US", state_id=None, state_name="NY")
VARIANT = c.VariantSnapshot(id=3, product_id=1, name="Mug", sku="MUG-1", price=Decimal("9.99"), track_inventory=True)
RATE = s.ShippingRate(id=1, shipping_method_id=1, name="UPS", code="ups", cost=Decimal("5.50"), selected=True)
SHIPMENT = s.Shipment(id=1, number="H1", stock_location_id=1, stock_location_name="NY", state="pending",
                      rates=[RATE], manifest=[s.ManifestItem(variant_id=3, quantity=2)])


def batches(number: str) -> list[tuple[str, list, str | None]]:
    """(aggregate type, events, causation) as the order's commands and its participants append
    them: every kind of change the view makes without reading it."""
    refusal_cause = str(uuid.uuid4())
    return [
        ("Order", [o.OrderCreated(number=number, guest_token_digest="d" * 64, currency="USD", email=None,
                                  user_id=42, dialect="solidus")], None),
        ("Order", [o.OrderEmailChanged(number=number, email="ann@example.com"),
                   o.BillAddressChanged(number=number, address=ADDRESS),
                   o.ShipAddressChanged(number=number, address=ADDRESS)], None),
        ("Cart", [c.LineItemAdded(order_number=number, line_item_id=1, variant=VARIANT, quantity=2,
                                  price=Decimal("9.99")),
                  c.LineItemAdded(order_number=number, line_item_id=2, variant=VARIANT, quantity=1,
                                  price=Decimal("1.05")),
                  c.CartRepriced(order_number=number, item_total=Decimal("21.03"), adjustment_total=Decimal("-1.50"),
                                 total_quantity=3, item_count=2, adjustments=[c.PromotionAdjustment(
                                     promotion_id=1, code="10off", label="Promotion", amount=Decimal("-1.50"))])],
         None),
        ("Order", [o.CheckoutAdvanced(number=number, from_state="cart", to_state="address")], None),
        ("Order", [o.DeliveryRequested(number=number, request_id="dr-1", ship_address=ADDRESS, currency="USD",
                                       lines=[])], None),
        ("Shipment", [s.ShipmentsBuilt(order_number=number, request_id="dr-1", shipments=[SHIPMENT])], None),
        ("Order", [o.DeliveryRefused(number=number, request_id="dr-1", code="no_rates", message="none")],
         refusal_cause),
        ("Cart", [c.LineItemQuantityChanged(order_number=number, line_item_id=1, quantity=5),
                  c.LineItemRemoved(order_number=number, line_item_id=2),
                  c.CartRepriced(order_number=number, item_total=Decimal("49.95"), adjustment_total=Decimal(0),
                                 total_quantity=5, item_count=1)], None),
        # A late copy of an older cart version: the reprice guard ignores it.
        ("CartReplay", [c.CartRepriced(order_number=number, item_total=Decimal("1.00"), adjustment_total=Decimal(0),
                                       total_quantity=1, item_count=1)], None),
        ("Order", [o.CheckoutRestarted(number=number, state="cart", delivery_request_id="dr-1")], None),
        ("Order", [o.ContactDetailsChanged(number=number, email=None, phone="555-0199")], None),
        ("Order", [o.OrderCanceled(number=number, completion_request_id="cr-1")], None),
        ("Cart", [c.CartEmptied(order_number=number)], None),
    ]


def envelopes_of(number: str):
    versions: dict[str, int] = {}
    for aggregate_type, events, cause in batches(number):
        with context.caused_by("corr-1", cause):
            start = versions.get(aggregate_type, 0)
            yield [envelope_for(e, aggregate_type=aggregate_type, aggregate_id=number, sequence=start + i + 1)
                   for i, e in enumerate(events)], start
        versions[aggregate_type] = start + len(events)


async def view_rows(pool, number: str) -> tuple[list[dict], list[dict]]:
    order = [dict(r) for r in await pool.fetch("SELECT * FROM order_view WHERE number = $1", number)]
    lines = [dict(r) for r in await pool.fetch("SELECT * FROM order_line_items WHERE order_number = $1 ORDER BY id",
                                               number)]
    return order, lines


@contextlib.asynccontextmanager
async def notifications(stack):
    """The `order_view` notifications delivered while the block runs."""
    received: list[str] = []
    conn = await asyncpg.connect(stack.database_url)
    await conn.add_listener("order_view", lambda *args: received.append(args[3]))
    try:
        yield received
        await asyncio.sleep(0.3)  # delivered after their commits
    finally:
        await conn.close()


async def test_one_statement_leaves_the_view_as_the_transactional_path(stack, order_schema, unique):
    number = f"R{unique}"
    envelopes = list(envelopes_of(number))
    async with fresh_schema(stack, f"t_{unique}_b", ROOT / "services" / "order" / "migrations") as other:
        paths = {}
        for schema, one_statement in ((order_schema, False), (other, True)):
            store = EventStore(schema, events_topic("order"))
            pool = await create_pool(stack.settings(), schema, min_size=1, max_size=1)
            try:
                async with notifications(stack) as received:
                    async with pool.acquire() as conn:
                        for batch, after in envelopes:
                            if one_statement:
                                changes = await view_changes(batch)
                                assert changes is not None
                                await store.append_envelopes(conn, batch, key=number, expected_version=after,
                                                             projected=(FUNCTION, changes))
                            else:
                                async with conn.transaction():
                                    await apply_to_view(conn, *batch)
                                    await store.append_envelopes(conn, batch, key=number, expected_version=after)
                paths[one_statement] = (await view_rows(pool, number), list(received))
            finally:
                await pool.close()
    (order, lines), notified = paths[True]
    assert paths[True] == paths[False]
    assert order[0]["state"] == "canceled" and order[0]["contact_phone"] == "555-0199" and lines == []
    assert order[0]["item_total"] == Decimal("49.95") and order[0]["cart_version"] == 6
    assert order[0]["bill_address"]["name"] == "Ann O'Neil" and order[0]["settled_by"] is None
    assert len(notified) == len(envelopes) and notified[-1].startswith(number)


ASYNCPG_INTROSPECTION = ("SELECT current_setting('jit')", "WITH RECURSIVE typeinfo_tree", "SELECT set_config('jit'")


@contextlib.asynccontextmanager
async def order_context(stack, schema, participants: object | None = None):
    """The order service's context on a pool of one connection, and the statements it sends;
    its peers are `participants` (by default, nothing a test may call)."""
    sent: list[str] = []

    def log(record) -> None:
        statement = " ".join(record.query.split())
        if not statement.startswith(ASYNCPG_INTROSPECTION):  # once per new statement's types
            sent.append(statement)

    pool = await create_pool(stack.settings(), schema, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        conn.add_query_logger(log)
    ctx = order_service.build(ServiceContext("order", stack.settings(), pool,
                                             EventStore(schema, events_topic("order")),
                                             peers={name: participants if participants is not None else object()
                                                    for name in order_service.peers}))
    try:
        yield ctx, sent
    finally:
        await ctx.close()
        await pool.close()


def is_transaction_control(statement: str) -> bool:
    return statement.split(" ", 1)[0].upper() in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


async def test_order_commands_write_in_one_statement(stack, order_schema):
    async with order_context(stack, order_schema) as (ctx, sent):
        result, _ = await commands.create_order(ctx, email=None, dialect="solidus")
        number = result.aggregate.id
        assert len(sent) == 1 and f"{FUNCTION}(" in sent[0], sent

        sent.clear()
        await commands.update_details(ctx, number, email="ann@example.com", bill_address=None, ship_address=None,
                                      use_billing=False)
        assert len(sent) == 1 and f"{FUNCTION}(" in sent[0], sent

        await ctx.pool.execute("UPDATE order_view SET item_count = 1 WHERE number = $1", number)
        sent.clear()
        await commands.advance(ctx, number)  # cart -> address: no delivery yet
        writes = [q for q in sent if "FROM order_view v" not in q]  # after the read of the order
        assert len(sent) == 2 and len(writes) == 1 and f"{FUNCTION}(" in writes[0], sent

        sent.clear()
        await commands.update_contact(ctx, number, email=None, phone="555-0100")
        assert len(sent) == 1 and not any(map(is_transaction_control, sent)), sent

        shown = await ctx.pool.fetchrow("SELECT state, email, contact_phone FROM order_view WHERE number = $1", number)
        assert dict(shown) == {"state": "address", "email": "ann@example.com", "contact_phone": "555-0100"}
        assert await ctx.pool.fetchval("SELECT count(*) FROM events WHERE aggregate_id = $1", number) == 4
        assert await ctx.pool.fetchval("SELECT count(*) FROM outbox") == 4


async def test_a_failing_change_stores_neither_events_nor_view(stack, order_schema, order_pool):
    store = EventStore(order_schema, events_topic("order"))
    number = "R-FAIL"
    async with order_pool.acquire() as conn:
        await store.append(conn, aggregate_type="Order", aggregate_id=number, expected_version=0, project=project,
                           events=[o.OrderCreated(number=number, guest_token_digest="d", currency="USD")])
        before = await view_rows(conn, number)
        batch = [envelope_for(o.OrderEmailChanged(number=number, email="a@example.com"), aggregate_type="Order",
                              aggregate_id=number, sequence=2)]
        changes = await view_changes(batch)
        assert changes is not None
        for failing in ({"op": "update", "number": number, "set": {"state": None}},  # NOT NULL
                        {"op": "update", "number": number, "set": {"no_such_column": 1}}):
            with pytest.raises(asyncpg.PostgresError):
                await store.append_envelopes(conn, batch, key=number, expected_version=1,
                                             projected=(FUNCTION, [*changes, failing]))
            assert not conn.is_in_transaction()
        assert await view_rows(conn, number) == before
    assert await order_pool.fetchval("SELECT count(*) FROM events") == 1
    assert await order_pool.fetchval("SELECT count(*) FROM outbox") == 1


async def test_a_concurrent_append_still_conflicts_and_the_command_retries(stack, order_schema):
    async with order_context(stack, order_schema) as (ctx, sent):
        result, _ = await commands.create_order(ctx, email=None)
        number = result.aggregate.id
        # Another process appends behind this one's back: its remembered state is now behind.
        async with ctx.pool.acquire() as conn:
            elsewhere = o.ContactDetailsChanged(number=number, email=None, phone="1")
            with pytest.raises(ConcurrencyConflict):
                await ctx.store.append(conn, aggregate_type="Order", aggregate_id=number, expected_version=0,
                                       events=[elsewhere], project=project)
            await ctx.store.append(conn, aggregate_type="Order", aggregate_id=number, expected_version=1,
                                   events=[elsewhere], project=project)
        sent.clear()
        await commands.update_contact(ctx, number, email=None, phone="2")
        assert sum(f"{FUNCTION}(" in q for q in sent) == 2, sent  # conflicted, then succeeded on the stream
        assert not any(map(is_transaction_control, sent)), sent
        await asyncio.gather(*(commands.update_contact(ctx, number, email=None, phone=str(n)) for n in range(3, 9)))
        sequences = await ctx.pool.fetch("SELECT sequence FROM events WHERE aggregate_id = $1 ORDER BY sequence",
                                         number)
        assert [r[0] for r in sequences] == list(range(1, 10))
        assert await ctx.pool.fetchval("SELECT contact_phone FROM order_view WHERE number = $1", number) in {
            str(n) for n in range(3, 9)}


async def test_a_fold_that_reads_the_view_falls_back_to_a_transaction(stack, order_schema, monkeypatch):
    # No fold of the order's own events reads the view today (their lists are patched in place,
    # migrations/013): one that did would fall back to a transaction.
    folded_by_reading = projections.FOLDS["order"]

    async def reading_fold(view, envelope, event) -> None:
        if isinstance(event, o.PaymentStateChanged):
            await view.get(envelope.aggregate_id, "shipments")
        await folded_by_reading(view, envelope, event)

    monkeypatch.setitem(projections.FOLDS, "order", reading_fold)
    async with order_context(stack, order_schema) as (ctx, sent):
        result, _ = await commands.create_order(ctx, email=None)
        number = result.aggregate.id
        await ctx.pool.execute("UPDATE order_view SET shipments = $2 WHERE number = $1", number,
                               [SHIPMENT.model_dump(mode="json")])
        changed = [envelope_for(o.PaymentStateChanged(number=number, payment_total=Decimal("10.00"),
                                                      payment_state="paid", shipment_state="ready"),
                                aggregate_type="Order", aggregate_id=number, sequence=2)]
        assert await view_changes(changed) is None  # it reads the shipments
        sent.clear()
        async with ctx.pool.acquire() as conn:
            await ctx.store.append(conn, aggregate_type="Order", aggregate_id=number, expected_version=1,
                                   events=[o.PaymentStateChanged(number=number, payment_total=Decimal("10.00"),
                                                                 payment_state="paid", shipment_state="ready")],
                                   project=project)
        assert sent[0] == "BEGIN;" and sent[-1] == "COMMIT;" and not any(f"{FUNCTION}(" in q for q in sent), sent
        shown = await ctx.pool.fetchrow("SELECT payment_state, payment_total, shipments FROM order_view"
                                        " WHERE number = $1", number)
        assert (shown["payment_state"], shown["payment_total"]) == ("paid", Decimal("10.00"))
        assert shown["shipments"][0]["state"] == "ready"


async def test_a_store_projected_inline_elsewhere_appends_in_a_transaction(stack, order_schema):
    """Another service's subscription applied in the order store's appends (a handler, not
    a change list) needs the transaction: the projection goes with it."""
    async def passed_over(conn, envelope) -> None:
        pass

    project_inline(order_schema, InlineProjection(consumer="other.orders", schema=order_schema, handler=passed_over))
    try:
        async with order_context(stack, order_schema) as (ctx, sent):
            result, _ = await commands.create_order(ctx, email=None)
            assert sent[0] == "BEGIN;" and sent[-1] == "COMMIT;" and not any(f"{FUNCTION}(" in q for q in sent)
            number = result.aggregate.id
            assert await ctx.pool.fetchval("SELECT state FROM order_view WHERE number = $1", number) == "cart"
            assert await ctx.pool.fetchval("SELECT count(*) FROM processed_events WHERE consumer = 'other.orders'") == 1
    finally:
        forget_inline(order_schema)


async def test_a_write_answers_the_order_as_it_left_it_without_reading_it(stack, order_schema):
    """Issue #26.2: create and `next` answer with the view their own statement left
    (its statement joins order_as_written): the same order read_order reads, and no read of their own."""
    from services.order.operations import OrderOperations
    from services.order.view import read_order

    async with order_context(stack, order_schema) as (ctx, sent):
        operations = OrderOperations(ctx)
        created = await operations.create_order(email="ann@example.com", dialect="solidus", view_wait_ms=1000)
        await asyncio.sleep(0)  # query loggers are called soon after, not at once
        assert len(sent) == 1 and "order_as_written(" in sent[0], sent
        number = created["number"]
        assert created["order"] == await read_order(ctx.pool, number)
        assert created["order"]["state"] == "cart" and created["order"]["line_items"] == []

        await ctx.pool.execute("INSERT INTO order_line_items (id, order_number, variant_id, quantity, price, variant)"
                               " VALUES (1, $1, 3, 2, 9.99, '{\"sku\": \"MUG-1\"}')", number)
        await ctx.pool.execute("UPDATE order_view SET item_count = 1, item_total = 19.98 WHERE number = $1", number)
        await asyncio.sleep(0)
        sent.clear()
        advanced = await operations.advance(number, view_wait_ms=1000)  # cart -> address
        await asyncio.sleep(0)
        assert advanced["state"] == "address"
        assert len(sent) == 2 and "order_as_written(" in sent[1], sent  # the facts read, the write
        assert advanced["order"] == await read_order(ctx.pool, number)
        assert advanced["order"]["line_items"][0]["variant"] == {"sku": "MUG-1"}



async def test_shipping_s_answer_and_the_orders_reaction_go_in_one_statement(stack, order_schema):
    """The handler of ShipmentsBuilt (an inline projection's, in shipping's transaction, or the
    view's consumer's): the shipments folded into the view, the Order's CheckoutAdvanced and its
    own view change, in the statement of the Order's append (was one per change, then the append)."""
    from services.order.consumers import on_event

    async with order_context(stack, order_schema) as (ctx, sent):
        result, _ = await commands.create_order(ctx, email=None)
        number = result.aggregate.id

        def to_delivery_request(order) -> None:  # the Order in `address`, awaiting its shipments
            order._record(o.CheckoutAdvanced(number=number, from_state="cart", to_state="address"))
            order._record(o.DeliveryRequested(number=number, request_id="dr-1", ship_address=ADDRESS,
                                              currency="USD", lines=[]))

        await ctx.orders.execute(ctx.pool, number, to_delivery_request, project=project)
        built = envelope_for(s.ShipmentsBuilt(order_number=number, request_id="dr-1", shipments=[SHIPMENT]),
                             aggregate_type="Shipment", aggregate_id=number, sequence=1)
        sent.clear()
        async with ctx.pool.acquire() as conn, conn.transaction():
            await on_event(ctx, conn, built)
        work = [q for q in sent if not is_transaction_control(q.rstrip(";"))]
        assert len(work) == 1 and f"{FUNCTION}(" in work[0], sent  # on the Order this process committed: no read
        shown = await ctx.pool.fetchrow("SELECT state, shipments, ship_total, pending_request FROM order_view"
                                        " WHERE number = $1", number)
        assert (shown["state"], shown["ship_total"], shown["pending_request"]) == ("delivery", Decimal("5.50"), None)
        assert [sh["number"] for sh in shown["shipments"]] == ["H1"]
        # Answered again: the Order records nothing (judged on its stream), and the fold goes alone.
        sent.clear()
        async with ctx.pool.acquire() as conn, db.transaction(conn):
            await on_event(ctx, conn, built)
        assert sent[-2] == "SELECT apply_view_changes($1)" and not any(FUNCTION in q for q in sent), sent
        assert await ctx.pool.fetchval("SELECT state FROM order_view WHERE number = $1", number) == "delivery"
