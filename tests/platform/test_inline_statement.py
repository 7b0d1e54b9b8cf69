"""Issue #26.3: an inline projection that can tell its changes without reading rides in the
producing service's append statement (shared/inline.py InlineStatement, the order's
`apply_inline`, services/order/migrations/012_inline_view_statement.sql): one statement, no
BEGIN/COMMIT, no search_path switch; the same view as the handler's path; its processed-events
record written with it; atomic with the append; and the handler's transaction when it must
read or change the Order."""
from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal

import asyncpg
import pytest

from services.order.consumers import inline_view_changes
from services.order.memory_view import MemoryOrderView
from services.order.projections import apply_to_view, fold_all, view_changes
from shared import db
from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import payment as p
from shared.contracts import shipping as s
from shared.envelope import envelope_for
from shared.eventstore import ConcurrencyConflict, EventStore
from shared.inline import InlineProjection, InlineStatement, applied_here, forget_inline, project_inline
from tests.conftest import ROOT, fresh_schema, schema_pool
from tests.platform.test_order_write_statement import ASYNCPG_INTROSPECTION, is_transaction_control

CONSUMER = "order.view"
ORDER_VIEW_STATEMENT = InlineStatement(inline_view_changes, "apply_inline")  # as services/order/consumers.py wires it
ADJUSTMENT = c.PromotionAdjustment(promotion_id=1, code="10off", label="Promotion", amount=Decimal("-1.50"))


def coupon_events(number: str) -> list:
    """What applying a coupon appends to the cart: nothing of the Order's own to decide."""
    return [c.PromotionApplied(order_number=number, promotion_id=1, code="10off", name="10 off",
                               kind="order_flat", value=Decimal("1.50"), currency="USD"),
            c.CartRepriced(order_number=number, item_total=Decimal("20.00"), adjustment_total=Decimal("-1.50"),
                           total_quantity=2, item_count=1, adjustments=[ADJUSTMENT], lines_changed=False)]


async def must_not_run(conn, envelope) -> None:
    raise AssertionError("the handler ran: the projection should have ridden in the statement")


@contextlib.asynccontextmanager
async def producer_and_view(stack, unique, suffix: str, handler=must_not_run,
                            statement: InlineStatement | None = ORDER_VIEW_STATEMENT):
    """A producing store (its own schema) whose appends the order view (another schema, with
    order R1 created) projects inline, a pool on the producer's schema and the statements it sends."""
    async with fresh_schema(stack, f"o{suffix}_{unique}", ROOT / "services" / "order" / "migrations") as view, \
            fresh_schema(stack, f"p{suffix}_{unique}") as producer, \
            schema_pool(stack, producer, max_size=1) as pool:
        order_store = EventStore(view, "order.events")
        async with pool.acquire() as conn:
            created = [envelope_for(o.OrderCreated(number="R1", guest_token_digest="d" * 64, currency="USD"),
                                    aggregate_type="Order", aggregate_id="R1", sequence=1)]
            await order_store.append_envelopes(conn, created, key="R1", expected_version=0,
                                               projected=("project_and_append_events", await view_changes(created)))
            sent: list[str] = []
            conn.add_query_logger(lambda record: sent.append(" ".join(record.query.split()))
                                  if not record.query.startswith(ASYNCPG_INTROSPECTION) else None)
        project_inline(producer, InlineProjection(consumer=CONSUMER, schema=view, handler=handler,
                                                  statement=statement))
        try:
            yield EventStore(producer, "cart.events"), view, pool, sent
        finally:
            forget_inline(producer)


async def view_row(pool, view: str) -> dict:
    row = await pool.fetchrow(f'SELECT * FROM "{view}".order_view WHERE number = $1', "R1")
    return dict(row)


async def recorded(pool, view: str) -> set:
    return {r[0] for r in await pool.fetch(f'SELECT event_id FROM "{view}".processed_events WHERE consumer = $1',
                                           CONSUMER)}


async def test_the_view_rides_in_the_append_statement_as_the_handler_would_apply_it(stack, unique):
    events = coupon_events("R1")

    async def handler(conn, envelope) -> None:  # the transactional path: on_event's view part
        await apply_to_view(conn, envelope)

    async with producer_and_view(stack, unique, "a") as (store, view, pool, sent):
        async with pool.acquire() as conn:
            stored = await store.append(conn, aggregate_type="Cart", aggregate_id="R1", expected_version=0,
                                        events=events)
        assert len(sent) == 1 and "apply_inline(" in sent[0] and "append_events(" in sent[0], sent
        assert not any(map(is_transaction_control, sent)) and "set_config" not in sent[0]
        ridden = await view_row(pool, view)
        assert await recorded(pool, view) == {e.event_id for e in stored}  # its Kafka consumer passes them over
        assert all(applied_here(CONSUMER, str(e.event_id)) for e in stored)
        async with pool.acquire() as conn:  # the producer's own tables are its own after it
            assert await conn.fetchval("SELECT count(*) FROM events") == 2
        envelopes = stored
    async with producer_and_view(stack, unique, "b", handler=handler, statement=None) as (store, view, pool, sent):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f'SET LOCAL search_path = "{view}"')  # as _apply_inline runs a handler
            for envelope in envelopes:
                await handler(conn, envelope)
        handled = await view_row(pool, view)
    # The same changes; only the two orders' own creation times differ (separate fixtures).
    assert ridden["updated_at"] == envelopes[-1].occurred_at  # stamped with the latest event
    times = ("created_at", "updated_at")
    assert {k: v for k, v in ridden.items() if k not in times} == {k: v for k, v in handled.items() if k not in times}
    assert ridden["item_total"] == Decimal("20.00") and ridden["adjustment_total"] == Decimal("-1.50")
    assert ridden["adjustments"][0]["code"] == "10off" and ridden["cart_version"] == 2


async def test_events_the_order_decides_on_run_the_handler_in_a_transaction(stack, unique):
    handled: list[str] = []

    async def handler(conn, envelope) -> None:
        handled.append(envelope.type)
        await apply_to_view(conn, envelope)

    captured = p.PaymentCaptured(order_number="R1", payment_id=1, amount=Decimal("9.99"), authorization="A")
    async with producer_and_view(stack, unique, "c", handler=handler) as (store, view, pool, sent):
        async with pool.acquire() as conn:
            stored = await store.append(conn, aggregate_type="Payment", aggregate_id="R1", expected_version=0,
                                        events=[captured])  # the Order's payment state follows its payments
        assert handled == ["payment.PaymentCaptured"]
        assert sent[0] == "BEGIN;" and sent[-1] == "COMMIT;" and not any("apply_inline(" in q for q in sent), sent
        assert await recorded(pool, view) == {stored[0].event_id}


def line_added(number: str, quantity: int = 1) -> list:
    """What adding a line appends to the cart: the lines changed, so the Order restarts its
    checkout if it is past the cart."""
    variant = c.VariantSnapshot(id=3, product_id=1, name="Mug", sku="MUG-1", price=Decimal("9.99"),
                                track_inventory=True)
    return [c.LineItemAdded(order_number=number, line_item_id=quantity, variant=variant, quantity=quantity,
                            price=Decimal("9.99")),
            c.CartRepriced(order_number=number, item_total=Decimal("9.99") * quantity, adjustment_total=Decimal(0),
                           total_quantity=quantity, item_count=1, lines_changed=True)]


async def test_a_changed_cart_rides_while_the_order_is_in_the_cart_and_else_the_handler_decides(stack, unique):
    handled: list[str] = []

    async def handler(conn, envelope) -> None:  # on_event's place: it would restart the checkout
        handled.append(envelope.type)
        await apply_to_view(conn, envelope)

    async with producer_and_view(stack, unique, "f", handler=handler) as (store, view, pool, sent):
        async with pool.acquire() as conn:
            first = await store.append(conn, aggregate_type="Cart", aggregate_id="R1", expected_version=0,
                                       events=line_added("R1"))
            await asyncio.sleep(0)  # query loggers are called soon after, not at once
            assert len(sent) == 1 and "apply_inline(" in sent[0] and handled == [], sent  # on the premise: in the cart
            # Inside a caller's transaction the premise cannot be retried: the handler runs.
            async with conn.transaction():
                await store.append(conn, aggregate_type="Cart", aggregate_id="R1", expected_version=2,
                                   events=line_added("R1", 2))
            assert handled == ["cart.LineItemAdded", "cart.CartRepriced"]
            handled.clear()
            await conn.execute(f'UPDATE "{view}".order_view SET state = $1 WHERE number = $2', "address", "R1")
            await asyncio.sleep(0)
            sent.clear()
            last = await store.append(conn, aggregate_type="Cart", aggregate_id="R1", expected_version=4,
                                      events=line_added("R1", 3))
        # The premise failed (the order left the cart): nothing of that statement stayed, the handler decided.
        assert "apply_inline(" in sent[0] and sent[1] == "BEGIN;" and sent[-1] == "COMMIT;", sent
        assert handled == ["cart.LineItemAdded", "cart.CartRepriced"]
        assert {e.event_id for e in first + last} <= await recorded(pool, view)
        assert await pool.fetchval(f'SELECT count(*) FROM "{view}".order_line_items') == 3
        assert (await view_row(pool, view))["item_total"] == Decimal("29.97")


async def test_a_ride_is_atomic_with_the_append(stack, unique):
    async def failing_changes(envelopes, premised):
        changes = await inline_view_changes(envelopes, premised)
        return [*changes, {"op": "update", "number": "R1", "set": {"no_such_column": 1}}]

    async with producer_and_view(stack, unique, "d", statement=InlineStatement(failing_changes, "apply_inline")) \
            as (store, view, pool, sent):
        before = await view_row(pool, view)
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.UndefinedColumnError):
                await store.append(conn, aggregate_type="Cart", aggregate_id="R1", expected_version=0,
                                   events=coupon_events("R1"))
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM events") == 0
        assert await view_row(pool, view) == before and await recorded(pool, view) == set()


async def test_a_ride_on_a_stale_version_conflicts_and_changes_nothing(stack, unique):
    async with producer_and_view(stack, unique, "e") as (store, view, pool, sent):
        async with pool.acquire() as conn:
            await store.append(conn, aggregate_type="Cart", aggregate_id="R1", expected_version=0,
                               events=coupon_events("R1"))
            after_first = await view_row(conn, view), await recorded(conn, view)  # (a pool of one)
            with pytest.raises(ConcurrencyConflict):
                await store.append(conn, aggregate_type="Cart", aggregate_id="R1", expected_version=0,
                                   events=coupon_events("R1"))
        assert (await view_row(pool, view), await recorded(pool, view)) == after_first


def payment_created(number: str, payment_id: int, amount: str) -> p.PaymentCreated:
    return p.PaymentCreated(order_number=number, payment_id=payment_id, payment_number=f"P{payment_id}",
                            payment_method_id=1, payment_method_name="Check", method_type="check",
                            amount=Decimal(amount))


def in_streams(number: str, batches: list[tuple[str, list]]) -> list[list]:
    """Each batch's envelopes, appended in turn to the order's stream of its aggregate type."""
    versions: dict[str, int] = {}
    envelopes = []
    for aggregate_type, events in batches:
        start = versions.get(aggregate_type, 0)
        envelopes.append([envelope_for(e, aggregate_type=aggregate_type, aggregate_id=number, sequence=start + i + 1)
                          for i, e in enumerate(events)])
        versions[aggregate_type] = start + len(events)
    return envelopes


async def test_payments_and_rates_change_in_place_without_a_read_as_a_rebuild_folds_them(stack, unique):
    """The folds of payments and replaced rates patch one element of their list (view.patch)
    instead of reading the list: no read, so they ride; the live tables end as a rebuild's
    memory does, and as the events say."""
    number = "R1"
    ground = s.ShippingRate(id=2, shipping_method_id=2, name="Ground", code="ground", cost=Decimal("7.25"),
                            selected=True)
    express = s.ShippingRate(id=3, shipping_method_id=3, name="Express", code="express", cost=Decimal("19.00"),
                             selected=False)
    shipment = s.Shipment(id=1, number="H1", stock_location_id=1, stock_location_name="NY", state="pending",
                          rates=[], manifest=[s.ManifestItem(variant_id=3, quantity=2)])
    batches = [
        ("Order", [o.OrderCreated(number=number, guest_token_digest="d" * 64, currency="USD")]),
        ("Shipment", [s.ShipmentsBuilt(order_number=number, request_id="dr-1", shipments=[shipment])]),
        ("Shipment", [s.ShipmentRatesReplaced(order_number=number, shipment_number="H1", rates=[ground, express])]),
        ("Payment", [payment_created(number, 11, "20.00"), payment_created(number, 11, "20.00"),  # redelivered
                     payment_created(number, 12, "5.00")]),
        ("Payment", [p.PaymentAuthorized(order_number=number, payment_id=11, amount=Decimal("20.00"),
                                         authorization="A1"),
                     p.PaymentCaptured(order_number=number, payment_id=11, amount=Decimal("20.00"),
                                       authorization="A1")]),
    ]
    envelopes = in_streams(number, batches)
    for batch in envelopes[2:]:
        assert await view_changes(batch) is not None  # no read: they can ride
    memory = MemoryOrderView()
    async with fresh_schema(stack, f"o_{unique}", ROOT / "services" / "order" / "migrations") as view, \
            schema_pool(stack, view, max_size=1) as pool:
        async with pool.acquire() as conn:
            for batch in envelopes:
                async with conn.transaction():
                    await apply_to_view(conn, *batch)  # SqlOrderView, one change at a time
                await fold_all(memory, batch)
        live = await view_row(pool, view)
    rebuilt = memory.orders[number]
    for column in ("payments", "shipments", "ship_total", "updated_at"):
        assert live[column] == rebuilt[column], column
    assert live["ship_total"] == Decimal("7.25")
    assert [r["selected"] for r in live["shipments"][0]["rates"]] == [True, False]
    assert [(x["id"], x["state"], x["amount"]) for x in live["payments"]] == [
        (11, "completed", "20.00"), (12, "checkout", "5.00")]
    assert live["payments"][0]["updated_at"] == envelopes[-1][-1].occurred_at.isoformat()


async def test_backordered_counts_and_placed_shipment_states_change_in_place_as_a_rebuild_folds_them(stack, unique):
    """StockAllocated's backordered counts, and the shipments' states once the order is placed
    (OrderCompleted, PaymentStateChanged), patch the shipments list in SQL (migrations/013)
    instead of reading it: so they ride, and the live tables end as a rebuild's memory does."""
    number = "R1"

    def shipment(n: int, variants: list[int]) -> s.Shipment:
        return s.Shipment(id=n, number=f"H{n}", stock_location_id=1, stock_location_name="NY", state="pending",
                          rates=[], manifest=[s.ManifestItem(variant_id=v, quantity=2) for v in variants])

    units = [s.AllocatedUnit(stock_location_id=1, variant_id=3, quantity=2, backordered=1, shipment_number="H1"),
             s.AllocatedUnit(stock_location_id=1, variant_id=4, quantity=2, shipment_number="H1"),
             s.AllocatedUnit(stock_location_id=1, variant_id=5, quantity=2, shipment_number="H2")]
    batches = [
        ("Order", [o.OrderCreated(number=number, guest_token_digest="d" * 64, currency="USD")]),
        ("Shipment", [s.ShipmentsBuilt(order_number=number, request_id="dr-1",
                                       shipments=[shipment(1, [3, 4]), shipment(2, [5])])]),
        ("Shipment", [s.StockAllocated(order_number=number, request_id="cr-1", units=units,
                                       ship_total=Decimal("0"))]),
        ("Order", [o.OrderCompleted(number=number, request_id="cr-1", total=Decimal("10"),
                                    payment_total=Decimal("0"), payment_state="balance_due",
                                    shipment_state="backorder")]),
        ("Order", [o.PaymentStateChanged(number=number, payment_total=Decimal("10"), payment_state="paid",
                                         shipment_state="backorder")]),
    ]
    envelopes = in_streams(number, batches)
    for batch in envelopes[2:]:
        assert await view_changes(batch) is not None  # no read: they can ride
    memory = MemoryOrderView()
    states = []
    async with fresh_schema(stack, f"o_{unique}", ROOT / "services" / "order" / "migrations") as view, \
            schema_pool(stack, view, max_size=1) as pool:
        async with pool.acquire() as conn:
            for batch in envelopes:
                async with conn.transaction():
                    await apply_to_view(conn, *batch)  # SqlOrderView: the same SQL as a ride
                await fold_all(memory, batch)
                shipments = await conn.fetchval(f'SELECT shipments FROM "{view}".order_view WHERE number = $1',
                                                number)
                assert shipments == memory.orders[number]["shipments"]
                states.append([sh["state"] for sh in shipments])
        live = await view_row(pool, view)
    assert [[item["backordered"] for item in sh["manifest"]] for sh in live["shipments"]] == [[1, 0], [0]]
    # Placed unpaid: both pending; paid: the shipment with a backordered item stays pending.
    assert states[3:] == [["pending", "pending"], ["pending", "ready"]]
    assert live["payment_state"] == "paid" and live["state"] == "complete"


async def test_in_the_producers_transaction_what_the_subscriber_decides_runs_before_the_ride(stack, unique):
    """InlineStatement.before (the Order's answer to shipping's): in the producer's transaction it
    runs on the transaction's connection before the append, whose statement carries the view's
    changes and the processed record; no search_path switch, no handler. Outside a transaction
    (no `before` possible: `premised`), a ShipmentsBuilt runs the handler instead."""
    decided: list[tuple[str, bool]] = []

    async def before(conn, envelopes) -> None:
        decided.append((envelopes[0].type, conn.is_in_transaction()))
        await conn.execute("SELECT 1")  # what the Order's append would be

    statement = InlineStatement(inline_view_changes, "apply_inline", before=before)
    shipment = s.Shipment(id=1, number="H1", stock_location_id=1, stock_location_name="NY", state="pending",
                          rates=[], manifest=[s.ManifestItem(variant_id=3, quantity=2)])
    built = s.ShipmentsBuilt(order_number="R1", request_id="dr-1", shipments=[shipment])
    async with producer_and_view(stack, unique, "b", statement=statement) as (store, view, pool, sent):
        async with pool.acquire() as conn:
            async with db.transaction(conn):
                sent.clear()
                stored = await store.append(conn, aggregate_type="Shipment", aggregate_id="R1",
                                            expected_version=0, events=[built])
            await asyncio.sleep(0.05)  # query loggers are called soon after
        assert decided == [("shipping.ShipmentsBuilt", True)]
        work = [q for q in sent if q.split(" ", 1)[0].rstrip(";") not in ("BEGIN", "COMMIT")]
        assert work[0] == "SELECT 1" and "apply_inline(" in work[1] and len(work) == 2, sent
        assert not any("set_config('search_path'" in q for q in sent)
        assert await recorded(pool, view) == {stored[0].event_id}
        assert [sh["number"] for sh in (await view_row(pool, view))["shipments"]] == ["H1"]
    assert await inline_view_changes([envelope_for(built, aggregate_type="Shipment", aggregate_id="R1",
                                                   sequence=1)], True) is None
