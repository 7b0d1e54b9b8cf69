"""A consumer's delivery whose handler's whole work is one statement costs that one statement
(shared/handler.py Statement): the processed-events record and the work go together, with no
BEGIN nor COMMIT; a duplicate changes nothing; a statement that fails leaves neither the record
nor the work, and the event is handled again (or dead-lettered) as ever. Through the real
broker and PostgreSQL, with the cart's `orders` subscription and the order view's."""
from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from functools import partial

import asyncpg

from services.cart.consumers import subscriptions as cart_subscriptions
from services.order.consumers import subscriptions as order_subscriptions
from services.order.projections import apply_to_view
from shared.contracts import order as o
from shared.envelope import envelope_for
from shared.handler import Statement
from shared.kafka import dlq_topic
from tests.conftest import ROOT, fresh_schema, schema_pool
from tests.helpers.events import Ticked
from tests.helpers.kafka import consuming, message, publish, publish_as_one_batch, read_topic
from tests.platform.test_inline_statement import coupon_events, line_added
from tests.platform.test_order_write_statement import ASYNCPG_INTROSPECTION, is_transaction_control

CART_ORDERS = next(s for s in cart_subscriptions if s.name == "orders")
ORDER_VIEW = next(s for s in order_subscriptions if s.name == "view")


@contextlib.asynccontextmanager
async def logged_pool(stack, schema: str):
    """A pool of one connection on `schema` (the consumer's), and the statements sent on it."""
    sent: list[str] = []

    def log(record) -> None:
        statement = " ".join(record.query.split())
        if not statement.startswith(ASYNCPG_INTROSPECTION):  # once per new statement's types
            sent.append(statement)

    async with schema_pool(stack, schema, max_size=1) as pool:
        async with pool.acquire() as conn:
            conn.add_query_logger(log)
        yield pool, sent


@contextlib.asynccontextmanager
async def probe(stack, schema: str):
    """A connection of the test's own on `schema`, apart from the consumer's."""
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": schema})
    try:
        yield conn
    finally:
        await conn.close()


async def until(task, check, what: str) -> None:
    """Until `check()` (a value, or a coroutine's) holds, while the consumer runs."""
    deadline = time.monotonic() + 45
    while not await _value(check()):
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, f"{what}: not in time"
        await asyncio.sleep(0.05)


async def _value(result):
    return await result if asyncio.iscoroutine(result) else result


@contextlib.asynccontextmanager
async def cart_with_coupon_reserved(stack, unique: str, number: str):
    """A cart schema whose order `number` holds a coupon's reservation, and a connection on it."""
    async with fresh_schema(stack, f"c_{unique}", ROOT / "services" / "cart" / "migrations") as cart:
        conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": cart})
        try:
            await conn.execute("INSERT INTO promotions (id, name, code, kind, value, currency)"
                               " VALUES (1, 'Ten off', '10off', 'order_flat', 10, 'USD')")
            await conn.execute("INSERT INTO promotion_uses (promotion_id, order_number) VALUES (1, $1)", number)
            yield cart, conn
        finally:
            await conn.close()


def cart_consumer(settings, pool, topic: str, group: str):
    """The cart's `orders` subscription (its handler and its one-statement form) on `topic`."""
    return consuming(settings, pool, topic, group, partial(CART_ORDERS.handler, None), CART_ORDERS.event_types,
                     statement=partial(CART_ORDERS.statement, None))


def placed(number: str) -> o.OrderCompleted:
    return o.OrderCompleted(number=number, request_id="c-1", total=Decimal("10.00"), payment_total=Decimal("10.00"),
                            payment_state="paid", shipment_state="ready")


async def completed(conn, number: str) -> bool:
    return await conn.fetchval("SELECT completed FROM promotion_uses WHERE order_number = $1", number)


async def records(conn, consumer: str) -> list:
    return [r[0] for r in await conn.fetch("SELECT event_id FROM processed_events WHERE consumer = $1", consumer)]


async def test_an_order_completed_costs_one_statement_and_a_duplicate_changes_nothing(stack, unique):
    settings = stack.settings(kafka_topic_partitions=1)
    topic, group, number = f"orders.{unique}", f"cart.orders-{unique}", "R100"
    done, delivery = message(placed(number), stream=number)
    async with cart_with_coupon_reserved(stack, unique, number) as (cart, conn), \
            logged_pool(stack, cart) as (pool, sent):
        await publish(settings, topic, [delivery])
        async with cart_consumer(settings, pool, topic, group) as task:
            await until(task, lambda: completed(conn, number), "the use completed")
            await asyncio.sleep(0.1)  # query loggers are called soon after, not at once
            assert len(sent) == 1, sent  # one statement: the record and the work, no transaction
            assert sent[0].startswith("WITH recorded AS (INSERT INTO processed_events")
            assert "UPDATE promotion_uses SET completed = true" in sent[0] and not is_transaction_control(sent[0])
            assert await records(conn, group) == [done.event_id]
            # Delivered again (a redelivery after a crash, say): recorded before, so nothing is done,
            # even to a row that would change (put back here to tell).
            await conn.execute("UPDATE promotion_uses SET completed = false")
            await publish(settings, topic, [delivery])
            await until(task, lambda: len(sent) == 2, "the duplicate handled")
        assert sent[1] == sent[0]
        assert await completed(conn, number) is False
        assert await records(conn, group) == [done.event_id]
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


async def refusing_uses(conn) -> None:
    """Updates of promotion_uses fail while `refusals` has a row; each attempt counted in a
    sequence (which a rollback does not undo)."""
    await conn.execute("CREATE TABLE refusals (why text); INSERT INTO refusals VALUES ('down for a moment');"
                       " CREATE SEQUENCE attempts;"
                       " CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                       " IF EXISTS (SELECT 1 FROM refusals) THEN PERFORM nextval('attempts');"
                       " RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;"
                       " CREATE TRIGGER refuse BEFORE UPDATE ON promotion_uses FOR EACH ROW EXECUTE FUNCTION refuse()")


async def attempts(conn) -> int:
    return await conn.fetchval("SELECT last_value FROM attempts WHERE is_called") or 0


async def test_a_failed_statement_leaves_neither_record_nor_work_and_the_event_is_handled_again(stack, unique):
    settings = stack.settings(kafka_topic_partitions=1, consumer_max_attempts=1000, consumer_retry_backoff_ms=20)
    topic, group, number = f"orders.{unique}", f"cart.orders-{unique}", "R200"
    done, delivery = message(placed(number), stream=number)
    async with cart_with_coupon_reserved(stack, unique, number) as (cart, conn), \
            logged_pool(stack, cart) as (pool, sent):
        await refusing_uses(conn)
        await publish(settings, topic, [delivery])
        async with cart_consumer(settings, pool, topic, group) as task:
            await until(task, lambda: _at_least(conn, 2), "two failed attempts")
            assert await records(conn, group) == [] and await completed(conn, number) is False
            await conn.execute("DELETE FROM refusals")  # the cause goes away: the retry goes through
            await until(task, lambda: completed(conn, number), "the use completed after all")
        assert await records(conn, group) == [done.event_id]
        assert not any(map(is_transaction_control, sent)), sent  # every attempt was the one statement
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


async def _at_least(conn, n: int) -> bool:
    return await attempts(conn) >= n


async def test_a_statement_that_keeps_failing_is_dead_lettered_as_ever_and_later_events_flow(stack, unique):
    settings = stack.settings(kafka_topic_partitions=1, consumer_max_attempts=3, consumer_retry_backoff_ms=10)
    topic, group, number = f"orders.{unique}", f"cart.orders-{unique}", "R300"
    _, failing = message(placed(number), stream=number)
    canceled, later = message(o.OrderCanceled(number=number, reason="fraud", completion_request_id="c-1"),
                              stream=number, sequence=2)
    async with cart_with_coupon_reserved(stack, unique, number) as (cart, conn), logged_pool(stack, cart) as (pool, _):
        await refusing_uses(conn)
        await publish(settings, topic, [failing])
        async with cart_consumer(settings, pool, topic, group) as task:
            await until(task, lambda: conn.fetchval("SELECT count(*) = 1 FROM dead_letters"), "dead-lettered")
            await publish(settings, topic, [later])
            await until(task, lambda: records(conn, group), "the later event handled")
        assert await attempts(conn) == 3  # retried, then given up
        letters = await conn.fetch("SELECT error, attempts FROM dead_letters")
        assert [(r["attempts"], "refused" in r["error"]) for r in letters] == [(3, True)]
        assert len(await read_topic(settings, dlq_topic(topic), until_count=1)) == 1
        # The failed one left no record; the later one (the reservation freed) was handled.
        assert await records(conn, group) == [canceled.event_id]
        assert await conn.fetchval("SELECT count(*) FROM promotion_uses") == 0


def counted(n_key: str = "n"):
    """A test statement form: a run's effects in one insert, for the run's events in order."""
    async def statement(envelopes) -> Statement:
        return Statement("INSERT INTO effects (n) SELECT unnest($1::int[]) WHERE EXISTS (SELECT 1 FROM recorded)"
                         " RETURNING n", ([e.payload[n_key] for e in envelopes],))
    return statement


async def must_not_run(conn, envelope) -> None:
    raise AssertionError("the handler ran: its statement form should have")


async def test_a_run_of_one_key_is_recorded_whole_in_one_statement_or_else_one_by_one(stack, unique):
    settings = stack.settings(kafka_topic_partitions=1)
    topic, group = f"runs.{unique}", f"g-{unique}"
    async with fresh_schema(stack, f"t_{unique}") as schema, logged_pool(stack, schema) as (pool, sent), \
            probe(stack, schema) as conn:
        await conn.execute("CREATE TABLE effects (id serial, n int NOT NULL)")
        ticks = [message(Ticked(n=n), stream="A", sequence=n) for n in (1, 2, 3)]
        await publish_as_one_batch(settings, topic, [m for _, m in ticks])
        async with consuming(settings, pool, topic, group, must_not_run, statement=counted()) as task:
            await until(task, lambda: conn.fetchval("SELECT count(*) = 3 FROM effects"), "the run handled")
            await asyncio.sleep(0.1)
            assert len(sent) == 1 and "WHERE NOT EXISTS" in sent[0], sent  # the whole run in one statement
            # Redelivered with a new one: the run finds one recorded, so each goes alone (the old
            # one a duplicate, the new one applied).
            fourth = message(Ticked(n=4), stream="A", sequence=4)
            await publish_as_one_batch(settings, topic, [ticks[2][1], fourth[1]])
            await until(task, lambda: conn.fetchval("SELECT count(*) = 4 FROM effects"), "the new one handled")
            await asyncio.sleep(0.1)
        assert len(sent) == 4 and not any(map(is_transaction_control, sent)), sent  # the run, then one by one
        assert [r["n"] for r in await conn.fetch("SELECT n FROM effects ORDER BY id")] == [1, 2, 3, 4]
        assert {r[0] for r in await conn.fetch("SELECT event_id FROM processed_events")} == \
            {e.event_id for e, _ in [*ticks, fourth]}
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_the_order_view_from_kafka_costs_one_statement_unless_the_order_decides(stack, unique):
    """The view's Kafka consumer (the services apart, or what an inline application missed)
    applies what an inline append would carry, in its one statement; a cart change after the
    order left the cart fails the statement's premise, and the handler decides instead."""
    settings = stack.settings(kafka_topic_partitions=1)
    topic, group = f"cart.{unique}", f"order.view-{unique}"
    handled: list[str] = []

    async def handler(conn, envelope) -> None:  # on_event's place: it would restart the checkout
        handled.append(envelope.type)
        await apply_to_view(conn, envelope)

    async with fresh_schema(stack, f"o_{unique}", ROOT / "services" / "order" / "migrations") as view, \
            logged_pool(stack, view) as (pool, sent), probe(stack, view) as conn:
        created = envelope_for(o.OrderCreated(number="R1", guest_token_digest="d" * 64, currency="USD"),
                               aggregate_type="Order", aggregate_id="R1", sequence=1)
        async with conn.transaction():
            await apply_to_view(conn, created)
        coupon = [envelope_for(event, aggregate_type="Cart", aggregate_id="R1", sequence=i + 1)
                  for i, event in enumerate(coupon_events("R1"))]
        await publish_as_one_batch(settings, topic, [(b"R1", e.to_json(), e.kafka_headers()) for e in coupon])
        async with consuming(settings, pool, topic, group, handler,
                             statement=partial(ORDER_VIEW.statement, None)) as task:
            await until(task, lambda: conn.fetchval("SELECT cart_version = 2 FROM order_view"), "the coupon shown")
            await asyncio.sleep(0.1)
            assert len(sent) == 1 and "apply_view_changes(" in sent[0] and handled == [], sent
            row = await conn.fetchrow("SELECT item_total, adjustment_total FROM order_view")
            assert (row["item_total"], row["adjustment_total"]) == (Decimal("20.00"), Decimal("-1.50"))
            await conn.execute("UPDATE order_view SET state = 'address'")
            sent.clear()
            changed = [envelope_for(event, aggregate_type="Cart", aggregate_id="R1", sequence=i + 3)
                       for i, event in enumerate(line_added("R1"))]
            await publish_as_one_batch(settings, topic, [(b"R1", e.to_json(), e.kafka_headers()) for e in changed])
            await until(task, lambda: conn.fetchval("SELECT count(*) = 1 FROM order_line_items"), "the line shown")
            await asyncio.sleep(0.1)
        # The statement failed on its premise (nothing stayed of it); the handler's transaction followed.
        assert "apply_view_changes(" in sent[0] and sent[1].startswith("BEGIN;") and sent[-1] == "COMMIT", sent
        assert handled == ["cart.LineItemAdded", "cart.CartRepriced"]
        assert {r[0] for r in await conn.fetch("SELECT event_id FROM processed_events")} == \
            {e.event_id for e in coupon + changed}
