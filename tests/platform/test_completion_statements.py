"""Issue #26: a completion (Solidus's `complete`, GetCandy's `process`) in few statements of the
order service. Its start (CompletionRequested, the view's pending request, the saga's row) is ONE
statement, `project_append_and_start_saga` (services/order/migrations/014_start_completion.sql),
atomic: a failing part or a concurrent append stores nothing. Its end (the pivot) is recorded on
the saga's row as the drive knew it, without reading it, the order's write answering with the
view it left: nothing is read back. Real PostgreSQL; the participants are stand-ins answering
the calls with their contracts' answer events, so that only the order service's statements are
counted (on its pool of one connection)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from decimal import Decimal

import asyncpg
import pytest

from services.order import commands
from services.order.commands import project
from services.order.consumers import VIEW_TOPICS
from services.order.operations import OrderOperations
from services.order.projections import view_changes
from services.order.view import VIEW_CONSUMER, read_order
from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import payment as p
from shared.contracts import shipping as s
from shared.envelope import envelope_for
from shared.eventstore import ConcurrencyConflict
from shared.inline import InlineProjection, forget_inline, project_inline
from shared.saga import SagaInstance
from shared.saga_rows import row_json
from tests.platform.test_order_write_statement import is_transaction_control, order_context

START = "project_append_and_start_saga"
LINE = c.LockedLine(line_item_id=1, variant_id=3, quantity=2, price=Decimal("9.99"), track_inventory=True)
SHIP_TOTAL = Decimal("5.00")
CHARGED = LINE.price * LINE.quantity + SHIP_TOTAL  # no tax in USD here
# One shipment with a unit sold on backorder, one without: placed and paid, only the second is ready.
SHIPMENTS = [{"id": 1, "number": "H1", "state": "pending", "rates": [], "manifest": [
                 {"variant_id": 3, "quantity": 1, "backordered": 1}]},
             {"id": 2, "number": "H2", "state": "pending", "rates": [], "manifest": [
                 {"variant_id": 3, "quantity": 1, "backordered": 0}]}]


def reply(event, aggregate_type: str, number: str) -> dict:
    """A step's reply (shared/steps.py StepReply): its answer event as stored."""
    envelope = envelope_for(event, aggregate_type=aggregate_type, aggregate_id=number, sequence=1)
    return {"events": [json.loads(envelope.to_json())]}


class Participants:
    """The cart, shipping and payment as the saga calls them, answering each step at once;
    `before_reply(step, saga_id, reply)` runs first (what a participant's commit did too)."""

    def __init__(self, before_reply=None) -> None:
        self.before_reply = before_reply
        self.cart, self.shipping, self.payment = self, self, self

    async def _answer(self, step: str, saga_id: str, answer: dict) -> dict:
        if self.before_reply is not None:
            await self.before_reply(step, saga_id, answer)
        return answer

    async def lock_cart(self, number: str, *, saga_id: str, **_) -> dict:
        return await self._answer("lock_cart", saga_id, reply(c.CartLocked(
            order_number=number, request_id=saga_id, lines=[LINE], item_total=LINE.price * LINE.quantity,
            adjustment_total=Decimal(0)), "Cart", number))

    async def allocate_stock(self, number: str, *, saga_id: str, **_) -> dict:
        return await self._answer("allocate_stock", saga_id, reply(s.StockAllocated(
            order_number=number, request_id=saga_id, ship_total=SHIP_TOTAL, units=[
                s.AllocatedUnit(stock_location_id=1, variant_id=3, quantity=2)]), "Shipment", number))

    async def process_payments(self, number: str, *, saga_id: str, amount: str) -> dict:
        assert Decimal(amount) == CHARGED
        return await self._answer("process_payments", saga_id, reply(p.PaymentsProcessed(
            order_number=number, request_id=saga_id, payment_total=CHARGED, secured_total=CHARGED),
            "OrderPayments", number))


@contextlib.asynccontextmanager
async def view_inline():
    """As when the participants share the process: their events are in the view as they are
    stored (services/order/consumers.py `view_is_inline`)."""
    async def unused(conn, envelope) -> None:
        raise AssertionError("nothing is appended to the participants' stores here")

    schemas = [topic.removesuffix(".events") for topic in VIEW_TOPICS]
    for schema in schemas:
        project_inline(schema, InlineProjection(consumer=VIEW_CONSUMER, schema="order", handler=unused))
    try:
        yield
    finally:
        for schema in schemas:
            forget_inline(schema)


async def confirmed_order(ctx) -> str:
    """An order at `confirm` with a line, a payment entered and its shipments planned."""
    number = f"R{uuid.uuid4().int % 10**9:09d}"
    events = [o.OrderCreated(number=number, guest_token_digest="d" * 64, currency="USD", dialect="solidus"),
              *(o.CheckoutAdvanced(number=number, from_state=a, to_state=b) for a, b in (
                  ("cart", "address"), ("address", "delivery"), ("delivery", "payment"), ("payment", "confirm")))]
    async with ctx.pool.acquire() as conn:
        await ctx.store.append(conn, aggregate_type="Order", aggregate_id=number, expected_version=0, events=events,
                               project=project)
        await conn.execute("INSERT INTO order_line_items (id, order_number, variant_id, quantity, price, variant)"
                           " VALUES ($1, $2, 3, 2, 9.99, '{\"track_inventory\": true}')",
                           uuid.uuid4().int % 10**8, number)
        await conn.execute("UPDATE order_view SET item_total = 19.98, item_count = 1, ship_total = $2, shipments = $3,"
                           " payments = $4 WHERE number = $1", number, SHIP_TOTAL, SHIPMENTS,
                           [{"id": 1, "state": "checkout", "amount": str(CHARGED)}])
    await ctx.orders.load(ctx.pool, number)  # remembered, as the checkout's last step leaves it
    return number


async def settled_statements(sent: list[str]) -> list[str]:
    await asyncio.sleep(0)  # query loggers are called soon after, not at once
    return list(sent)


async def test_a_completion_in_one_process_is_nine_statements_and_reads_nothing_back(stack, order_schema):
    """The facts read, the start (one statement), an answer per participant (one statement
    each), the pivot (its transaction: the answer on the saga's row, the order's reference, the
    order's write reading what it left). No read of the saga's row, nor of the shipments, nor
    of the order after its end: the answer is what the pivot's statement read."""
    async with view_inline(), order_context(stack, order_schema, Participants()) as (ctx, sent):
        number = await confirmed_order(ctx)
        sent.clear()
        answered = await OrderOperations(ctx).complete(number, view_wait_ms=5000)
        statements = await settled_statements(sent)
        shape = ["FROM order_view v", f"{START}(", "record_saga_answer(", "record_saga_answer(", "BEGIN;",
                 "record_saga_answer(", "monthly_references", "order_as_written(", "COMMIT;"]
        assert len(statements) == len(shape) and all(
            part in q for part, q in zip(shape, statements, strict=True)), statements
        assert not any(q.startswith("SELECT id, saga") or "SELECT shipments" in q for q in statements)

        order = answered["order"]
        assert order["state"] == "complete" and order["pending_request"] is None and not answered["view_stale"]
        assert order == await read_order(ctx.pool, number)
        assert [sh["state"] for sh in order["shipments"]] == ["pending", "ready"]  # H1 holds a backorder
        assert order["payment_state"] == "paid" and order["reference"].endswith("-0001")
        saga = await ctx.pool.fetchrow("SELECT status, version, ended_at FROM sagas WHERE id = $1",
                                       answered["awaiting"])
        assert saga["status"] == "completed" and saga["version"] == 3 and saga["ended_at"] is not None
        assert await ctx.pool.fetchval("SELECT count(*) FROM processed_events WHERE consumer = 'order.saga'") == 3


async def test_apart_from_its_participants_the_end_is_told_by_one_read(stack, order_schema, order_pool):
    """Where the view follows the participants through Kafka, the pivot's own reading is not
    enough (the answer that settled it may not be in the view yet): one read tells both whether
    it settled and the order (was two: has_settled, then read_order)."""
    async def applied_by_the_view(step, saga_id, answer) -> None:  # what the view's consumer does
        await order_pool.execute("INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)",
                                 VIEW_CONSUMER, uuid.UUID(answer["events"][0]["event_id"]))

    async with order_context(stack, order_schema, Participants(applied_by_the_view)) as (ctx, sent):
        number = await confirmed_order(ctx)
        sent.clear()
        answered = await OrderOperations(ctx).complete(number, view_wait_ms=5000)
        statements = await settled_statements(sent)
        end = len(statements) - 1 - statements[::-1].index("COMMIT;")
        assert "order_as_written(" in statements[end - 1], statements
        after = statements[end + 1:]
        assert len(after) == 1 and "AS settled" in after[0], statements
        assert answered["order"]["state"] == "complete" and not answered["view_stale"]
        assert answered["order"] == await read_order(ctx.pool, number)


async def test_a_row_moved_on_before_the_pivot_stores_nothing_and_it_is_recorded_the_long_way(stack, order_schema,
                                                                                               order_pool):
    """The pivot is premised on the saga's row being as the drive knew it: moved on meanwhile (an
    operator, the sweep), its transaction fails at its first statement and rolls back, the
    order's reference with it; the long way then records it once."""
    async def moved_on(step, saga_id, answer) -> None:
        if step == "process_payments":  # any change of the row moves its version on
            await order_pool.execute("UPDATE sagas SET retries = retries WHERE id = $1", saga_id)

    async with view_inline(), order_context(stack, order_schema, Participants(moved_on)) as (ctx, sent):
        number = await confirmed_order(ctx)
        sent.clear()
        answered = await OrderOperations(ctx).complete(number, view_wait_ms=5000)
        statements = await settled_statements(sent)
        failed = statements.index("BEGIN;")
        assert "record_saga_answer(" in statements[failed + 1] and statements[failed + 2] == "ROLLBACK;", statements
        assert any(q.startswith("SELECT id, saga") and "FOR UPDATE" in q for q in statements[failed + 3:])
        assert answered["order"]["state"] == "complete"
        assert answered["order"]["reference"].endswith("-0001")  # the rolled-back one was not taken
        assert await ctx.pool.fetchval("SELECT count(*) FROM events WHERE aggregate_id = $1"
                                       " AND type = 'order.OrderCompleted'", number) == 1
        assert await ctx.pool.fetchval("SELECT status FROM sagas WHERE id = $1", answered["awaiting"]) == "completed"


async def test_the_start_is_one_statement_that_stores_the_event_the_view_and_the_saga(stack, order_schema):
    async with order_context(stack, order_schema, Participants()) as (ctx, sent):
        number = await confirmed_order(ctx)
        started: list[SagaInstance] = []
        ctx.completion.drive = lambda saga_id, known=None, **_: started.append(known)  # not driven here
        sent.clear()
        result = await commands.complete(ctx, number)
        statements = await settled_statements(sent)
        assert len(statements) == 2 and f"{START}(" in statements[1], statements  # the facts read, the start
        assert not any(map(is_transaction_control, statements))
        saga_id = result.aggregate.completing
        requested = result.events[0]
        assert requested.type == "order.CompletionRequested" and requested.payload["request_id"] == saga_id
        assert await ctx.pool.fetchval("SELECT pending_request FROM order_view WHERE number = $1", number) == saga_id
        row = await ctx.pool.fetchrow("SELECT * FROM sagas WHERE key = $1", number)
        assert row["id"] == saga_id and row["status"] == "running" and row["invoked"] == ["lock_cart"]
        assert row["started_by"] == row["cause_event_id"] == str(requested.event_id) and row["version"] == 0
        # The drive starts from the instance as stored, without reading it.
        assert row_json(started[0]) == row_json(await ctx.completion._read(saga_id))


async def test_a_concurrent_append_fails_the_start_whole_and_it_is_started_again(stack, order_schema):
    async with order_context(stack, order_schema, Participants()) as (ctx, sent):
        number = await confirmed_order(ctx)
        ctx.completion.drive = lambda *args, **kwargs: None
        await commands.update_contact(ctx, number, email=None, phone="1")  # the state this process trusts
        async with ctx.pool.acquire() as conn:  # another process appends behind its back
            await ctx.store.append(conn, aggregate_type="Order", aggregate_id=number, expected_version=6,
                                   events=[o.ContactDetailsChanged(number=number, email=None, phone="2")],
                                   project=project)
        sent.clear()
        result = await commands.complete(ctx, number)
        statements = await settled_statements(sent)
        assert sum(f"{START}(" in q for q in statements) == 2, statements  # conflicted, then started
        assert not any(map(is_transaction_control, statements))
        rows = await ctx.pool.fetch("SELECT id FROM sagas WHERE key = $1", number)
        assert [r["id"] for r in rows] == [result.aggregate.completing]
        assert await ctx.pool.fetchval("SELECT count(*) FROM events WHERE aggregate_id = $1"
                                       " AND type = 'order.CompletionRequested'", number) == 1


async def test_a_failing_part_of_the_start_stores_nothing(stack, order_schema):
    """The statement is its own transaction: a concurrent append, a view change or a saga row
    that fails leaves neither event, outbox row, view change nor saga row."""
    async with order_context(stack, order_schema, Participants()) as (ctx, _):
        number = await confirmed_order(ctx)  # its stream is at 5
        async with ctx.pool.acquire() as conn:  # another writer takes 6
            await ctx.store.append(conn, aggregate_type="Order", aggregate_id=number, expected_version=5,
                                   events=[o.ContactDetailsChanged(number=number, email=None, phone="1")],
                                   project=project)
        saga_id = str(uuid.uuid4())
        requested = o.CompletionRequested(number=number, request_id=saga_id, total=CHARGED, lines=[])
        late, next_ = ([envelope_for(requested, aggregate_type="Order", aggregate_id=number, sequence=sequence)]
                       for sequence in (6, 7))
        view = await view_changes(next_)
        assert view is not None
        saga = row_json(ctx.completion.starting(SagaInstance(id=saga_id, saga="completion", key=number,
                                                             correlation_id="c", data={"lines": []}),
                                                cause=str(next_[0].event_id)))
        failing = [
            (late, 5, {"view": view, "saga": saga}),  # the stream moved past 5: a conflict
            (next_, 6, {"view": [*view, {"op": "update", "number": number, "set": {"state": None}}], "saga": saga}),
            (next_, 6, {"view": view, "saga": {**saga, "status": "thinking"}}),  # the sagas table's CHECK
            (next_, 6, {"view": view}),  # no instance: refused
        ]
        before = await counts(ctx.pool, number)
        async with ctx.pool.acquire() as conn:
            for batch, expected_version, changes in failing:
                with pytest.raises((ConcurrencyConflict, asyncpg.PostgresError)):
                    await ctx.store.append_envelopes(conn, batch, key=number, expected_version=expected_version,
                                                     projected=(START, changes))
                assert not conn.is_in_transaction()
                assert await counts(conn, number) == before, changes
            await ctx.store.append_envelopes(conn, next_, key=number, expected_version=6,
                                             projected=(START, {"view": view, "saga": saga}))
        after = await counts(ctx.pool, number)
        assert after["events"] == before["events"] + 1 and after["outbox"] == before["outbox"] + 1
        assert after["sagas"] == 1 and after["pending_request"] == saga_id


async def counts(conn, number: str) -> dict:
    return {"events": await conn.fetchval("SELECT count(*) FROM events WHERE aggregate_id = $1", number),
            "outbox": await conn.fetchval("SELECT count(*) FROM outbox"),
            "sagas": await conn.fetchval("SELECT count(*) FROM sagas WHERE key = $1", number),
            "pending_request": await conn.fetchval("SELECT pending_request FROM order_view WHERE number = $1",
                                                   number),
            "view": dict(await conn.fetchrow("SELECT * FROM order_view WHERE number = $1", number))}


async def test_where_the_order_store_needs_a_transaction_the_start_takes_one(stack, order_schema):
    """Another service projecting the order's appends inline here (a handler): the start goes
    in the append's transaction, the saga's row with it."""
    async def passed_over(conn, envelope) -> None:
        pass

    project_inline(order_schema, InlineProjection(consumer="other.orders", schema=order_schema, handler=passed_over))
    try:
        async with order_context(stack, order_schema, Participants()) as (ctx, sent):
            number = await confirmed_order(ctx)
            started: list[SagaInstance] = []
            ctx.completion.drive = lambda saga_id, known=None, **_: started.append(known)
            sent.clear()
            result = await commands.complete(ctx, number)
            statements = await settled_statements(sent)
            assert statements[1] == "BEGIN;" and statements[-1] == "COMMIT;", statements
            assert any("start_saga(" in q for q in statements) and not any(f"{START}(" in q for q in statements)
            saga_id = result.aggregate.completing
            assert row_json(started[0]) == row_json(await ctx.completion._read(saga_id))
            assert await ctx.pool.fetchval("SELECT pending_request FROM order_view WHERE number = $1",
                                           number) == saga_id
    finally:
        forget_inline(order_schema)
