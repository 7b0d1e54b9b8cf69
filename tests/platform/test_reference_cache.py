"""Issue #26.5: reference data comes from a per-process cache (shared/reference_cache.py),
dropped in every process when it changes: a cached read sends no statement; a change made by
plain SQL on another connection is seen by the next read once its notification arrives; no
answer is served or kept while the LISTEN connection is down, and its drop forgets them all;
an answer read while its table changed is not kept; stock counts are never cached."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from decimal import Decimal

import asyncpg

from services.shipping import commands
from services.shipping.app import definition as shipping_service
from shared.db import create_pool
from shared.eventstore import EventStore
from shared.kafka import events_topic
from shared.reference_cache import LISTENER, ReferenceCache, ReferenceListener
from shared.service import ServiceContext
from tests.conftest import ROOT, fresh_schema
from tests.platform.test_order_write_statement import ASYNCPG_INTROSPECTION

MIGRATIONS = ROOT / "services" / "shipping" / "migrations"
WAIT_S = 5.0  # how long a notification may take here at most (it takes milliseconds)


@contextlib.asynccontextmanager
async def shipping(stack, unique):
    """A shipping schema with a zone, a method and a location holding 5 of variant 1; its
    service's context on a pool of one connection, and the statements that pool sends."""
    async with fresh_schema(stack, f"t_{unique}", MIGRATIONS) as schema:
        sent: list[str] = []

        def log(record) -> None:
            if not record.query.startswith(ASYNCPG_INTROSPECTION):
                sent.append(" ".join(record.query.split()))

        pool = await create_pool(stack.settings(), schema, min_size=1, max_size=1)
        async with pool.acquire() as conn:
            conn.add_query_logger(log)
            await conn.execute(
                "INSERT INTO zones (id, name, countries) VALUES (1, 'US', '{US}');"
                "INSERT INTO shipping_methods (id, name, code, cost, currency, zone_ids)"
                " VALUES (1, 'Ground', 'ground', 5, 'USD', '{1}');"
                "INSERT INTO stock_locations (id, name) VALUES (1, 'Main');"
                "INSERT INTO stock_items (stock_location_id, variant_id, count_on_hand) VALUES (1, 1, 5)")
        ctx = shipping_service.build(ServiceContext("shipping", stack.settings(), pool,
                                                    EventStore(schema, events_topic("shipping"))))
        try:
            yield ctx, sent
        finally:
            await ctx.close()
            await pool.close()


async def plain_sql(stack, schema: str, statement: str) -> None:
    """A change made by another connection (an operator's psql), committed on its own."""
    conn = await asyncpg.connect(stack.database_url, server_settings={"search_path": schema})
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def told_of(cache: ReferenceCache, table: str, seen: int) -> None:
    """Wait (bounded) until `cache` has been told of a change of `table` after `seen`."""
    deadline = time.monotonic() + WAIT_S
    while cache.generation(table) == seen:
        assert time.monotonic() < deadline, f"no notification of {table} within {WAIT_S} s"
        await asyncio.sleep(0.005)


async def costs(ctx) -> list[Decimal]:
    return [m.cost for m in await commands.methods_for(ctx, ctx.pool, "US", "USD")]


def reads_of(sent: list[str], table: str) -> int:
    return sum(f"FROM {table}" in statement for statement in sent)


async def test_a_cached_read_sends_no_statement_and_stock_is_read_every_time(stack, unique):
    async with shipping(stack, unique) as (ctx, sent):
        assert await costs(ctx) == [Decimal(5)]
        locations = await commands.active_locations(ctx, ctx.pool, [1])
        assert reads_of(sent, "shipping_methods m") == reads_of(sent, "stock_locations WHERE") == 1, sent
        sent.clear()
        for _ in range(3):
            assert await costs(ctx) == [Decimal(5)]
            assert await commands.active_locations(ctx, ctx.pool, [1]) == locations
            assert 1 in await commands.method_ids(ctx)
        sent.clear()
        assert await costs(ctx) == [Decimal(5)] and await commands.active_locations(ctx, ctx.pool, [1]) == locations
        # The locations and methods came from the cache; the stock items, read every time.
        assert len(sent) == 1 and "FROM stock_items" in sent[0], sent

        # A count changed by plain SQL (no notification: stock is not reference data) is
        # seen at once, by a read that does not wait for anything.
        await plain_sql(stack, ctx.store.schema, "UPDATE stock_items SET count_on_hand = 2")
        assert [loc.on_hand for loc in await commands.active_locations(ctx, ctx.pool, [1])] == [{1: 2}]


async def test_a_change_by_plain_sql_elsewhere_is_read_once_notified(stack, unique):
    async with shipping(stack, unique) as (ctx, sent):
        assert await costs(ctx) == [Decimal(5)]
        seen = ctx.reference.generation("shipping_methods")
        await plain_sql(stack, ctx.store.schema, "UPDATE shipping_methods SET cost = 7")
        await told_of(ctx.reference, "shipping_methods", seen)
        sent.clear()
        assert await costs(ctx) == [Decimal(7)]
        assert reads_of(sent, "shipping_methods m") == 1, sent

        # A zone is a table the methods were read from too; a location is not.
        seen = ctx.reference.generation("zones")
        await plain_sql(stack, ctx.store.schema, "UPDATE zones SET countries = '{CA}'")
        await told_of(ctx.reference, "zones", seen)
        assert await costs(ctx) == []
        await commands.active_locations(ctx, ctx.pool)
        seen = ctx.reference.generation("stock_locations")
        await plain_sql(stack, ctx.store.schema, "INSERT INTO stock_locations (id, name) VALUES (2, 'Annex')")
        await told_of(ctx.reference, "stock_locations", seen)
        sent.clear()
        assert [loc.name for loc in await commands.active_locations(ctx, ctx.pool)] == ["Main", "Annex"]
        assert await costs(ctx) == []
        assert reads_of(sent, "stock_locations WHERE") == 1 and reads_of(sent, "shipping_methods m") == 0, sent


async def test_every_instance_drops_what_another_changed(stack, unique):
    """Two processes' caches (each with its own LISTEN connection) both read the change."""
    async with shipping(stack, unique) as (ctx, sent):
        other = dataclasses.replace(ctx, reference=ReferenceCache(ctx.store.schema, ctx.settings,
                                                                  ReferenceListener()))
        try:
            assert await costs(ctx) == await costs(other) == [Decimal(5)]
            sent.clear()
            assert await costs(ctx) == await costs(other) == [Decimal(5)]
            assert sent == []
            seen = [c.reference.generation("shipping_methods") for c in (ctx, other)]
            await plain_sql(stack, ctx.store.schema, "UPDATE shipping_methods SET cost = 9")
            for context, generation in zip((ctx, other), seen, strict=True):
                await told_of(context.reference, "shipping_methods", generation)
            assert await costs(ctx) == await costs(other) == [Decimal(9)]
            assert reads_of(sent, "shipping_methods m") == 2, sent
        finally:
            other.reference.close()


async def test_a_dropped_listen_connection_forgets_everything(stack, unique):
    async with shipping(stack, unique) as (ctx, sent):
        await costs(ctx)
        pid = LISTENER.backend_pid
        assert pid is not None and len(ctx.reference) == 1
        await plain_sql(stack, ctx.store.schema, f"SELECT pg_terminate_backend({pid})")
        deadline = time.monotonic() + WAIT_S
        while LISTENER.up:
            assert time.monotonic() < deadline, "the terminated connection still looks up"
            await asyncio.sleep(0.005)
        assert len(ctx.reference) == 0
        sent.clear()
        assert await costs(ctx) == [Decimal(5)]  # connected again, but what it held may be stale
        assert reads_of(sent, "shipping_methods m") == 1, sent
        assert LISTENER.up and LISTENER.backend_pid != pid


async def test_nothing_is_served_or_kept_without_a_listen_connection(stack, unique):
    async with shipping(stack, unique) as (ctx, sent):
        unreachable = dataclasses.replace(ctx.settings, database_url="postgresql://nobody@127.0.0.1:9/none")
        deaf = dataclasses.replace(ctx, reference=ReferenceCache(ctx.store.schema, unreachable, ReferenceListener()))
        for _ in range(3):
            assert await costs(deaf) == [Decimal(5)]
        assert reads_of(sent, "shipping_methods m") == 3 and len(deaf.reference) == 0, sent
        deaf.reference.close()


async def test_an_answer_read_while_its_table_changed_is_not_kept(stack, unique):
    async with shipping(stack, unique) as (ctx, sent):
        await commands.active_locations(ctx, ctx.pool)  # listening
        loads: list[str] = []

        def changed_while_read(key: str, table: str, change: str):
            """A read whose first load sees the table before a change that commits, and is
            announced, while it is still under way."""
            async def load() -> tuple:
                loads.append(key)
                rows = tuple(await ctx.pool.fetch("SELECT id, name FROM stock_locations WHERE active"))
                if loads.count(key) == 1:
                    seen = ctx.reference.generation(table)
                    await plain_sql(stack, ctx.store.schema, change)
                    await told_of(ctx.reference, table, seen)
                return rows
            return ctx.reference.read((key,), ("stock_locations",), load)

        raced = "UPDATE stock_locations SET active = false"
        assert [r["name"] for r in await changed_while_read("raced", "stock_locations", raced)] == ["Main"]
        assert list(await changed_while_read("raced", "stock_locations", raced)) == []  # not kept: read again
        assert loads == ["raced", "raced"]
        # A change of a table it was not read from does not cost a read its place.
        other = "UPDATE shipping_methods SET cost = 8"
        await changed_while_read("unrelated", "shipping_methods", other)
        await changed_while_read("unrelated", "shipping_methods", other)
        assert loads == ["raced", "raced", "unrelated"]
