"""Issue #26 (CPU): the order view's changes are applied by statements planned once per
connection (services/order/migrations/015_static_view_writes.sql), not built as text and
EXECUTEd for each change. They must write what the dynamic ones wrote: every column by name,
defaults for an insert's missing keys, the row's own values for an update's, a stamp only
forward; and refuse what those refused: a key that is not a column, a change of the number."""
from __future__ import annotations

from decimal import Decimal

import asyncpg
import pytest

from services.order.view import _COLUMN_DEFAULTS, _VIEW_COLUMNS

NUMBER = "R-STATIC"


async def apply(conn, *changes: dict) -> None:
    await conn.execute("SELECT apply_view_changes($1)", list(changes))


async def table_columns(conn, table: str) -> set[str]:
    return {r["attname"] for r in await conn.fetch(
        "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped", table)}


async def created(conn) -> None:
    await apply(conn, {"op": "create", "row": {"number": NUMBER, "guest_token_digest": "d", "dialect": "solidus",
                                               "state": "cart", "currency": "USD",
                                               "created_at": "2026-12-07T10:00:00+00:00",
                                               "updated_at": "2026-12-07T10:00:00+00:00"}})


async def test_an_insert_takes_each_missing_column_s_default(order_pool):
    async with order_pool.acquire() as conn:
        await created(conn)
        row = dict(await conn.fetchrow("SELECT * FROM order_view WHERE number = $1", NUMBER))
    assert row["state"] == "cart" and row["guest_token_digest"] == "d"
    # The table's defaults, as the dynamic insert (which named only the given columns) left them.
    assert {k: row[k] for k in _COLUMN_DEFAULTS} == _COLUMN_DEFAULTS


async def test_every_column_of_the_view_is_written_by_name(order_pool):
    """A column added without `SELECT define_order_view_writers()` would be refused here."""
    async with order_pool.acquire() as conn:
        assert await table_columns(conn, "order_view") - {"number"} == set(_VIEW_COLUMNS)
        await created(conn)
        values = {"guest_token_digest": "d2", "dialect": "getcandy", "state": "address", "currency": "EUR",
                  "email": "ann@example.com", "user_id": 7, "created_at": "2026-12-07T09:00:00+00:00",
                  "updated_at": "2026-12-07T11:00:00+00:00", "completed_at": "2026-12-07T12:00:00+00:00",
                  "item_total": "1.10", "adjustment_total": "-2.20", "ship_total": "3.30", "total_quantity": 4,
                  "item_count": 5, "adjustments": [{"label": "x"}], "cart_version": 6,
                  "bill_address": {"city": "A"}, "ship_address": {"city": "B"}, "shipments": [{"number": "H1"}],
                  "pending_request": {"kind": "complete"}, "refusal": {"code": "r"}, "payments": [{"id": 1}],
                  "payment_total": "7.70", "payment_state": "paid", "shipment_state": "ready",
                  "contact_phone": "555", "reference": "2026-12-000001",
                  "settled_by": "00000000-0000-0000-0000-000000000001"}
        assert set(values) == set(_VIEW_COLUMNS)
        await apply(conn, {"op": "update", "number": NUMBER, "set": values})
        row = dict(await conn.fetchrow("SELECT * FROM order_view WHERE number = $1", NUMBER))
        assert row["item_total"] == Decimal("1.10") and row["adjustments"] == [{"label": "x"}]
        assert row["settled_by"] is not None and row["user_id"] == 7 and row["state"] == "address"
        # An update leaves what it does not name as it was.
        await apply(conn, {"op": "update", "number": NUMBER, "set": {"email": "bo@example.com"}})
        after = dict(await conn.fetchrow("SELECT * FROM order_view WHERE number = $1", NUMBER))
        assert after == {**row, "email": "bo@example.com"}


async def test_a_stamp_only_moves_updated_at_forward_and_a_version_guard_holds(order_pool):
    async with order_pool.acquire() as conn:
        await created(conn)
        await apply(conn, {"op": "update", "number": NUMBER, "set": {}, "stamp": "2026-12-07T09:00:00+00:00"})
        earlier = await conn.fetchval("SELECT updated_at::text FROM order_view WHERE number = $1", NUMBER)
        await apply(conn, {"op": "update", "number": NUMBER, "set": {"cart_version": 3},
                           "stamp": "2026-12-07T13:00:00+00:00"})
        # Below a version already there: the repricing is older than the row, nothing changes.
        await apply(conn, {"op": "update", "number": NUMBER, "set": {"item_total": "9.99", "cart_version": 2},
                           "below_cart_version": 2})
        row = await conn.fetchrow("SELECT updated_at::text, cart_version, item_total FROM order_view"
                                  " WHERE number = $1", NUMBER)
    assert earlier.startswith("2026-12-07 10:00:00") and row["updated_at"].startswith("2026-12-07 13:00:00")
    assert (row["cart_version"], row["item_total"]) == (3, Decimal(0))


async def test_unknown_keys_and_a_new_number_are_refused(order_pool):
    async with order_pool.acquire() as conn:
        await created(conn)
        for change in ({"op": "update", "number": NUMBER, "set": {"no_such_column": 1}},
                       {"op": "create", "row": {"number": "R2", "no_such_column": 1}},
                       {"op": "add_line", "line": {"id": 1, "order_number": NUMBER, "oops": 1}}):
            with pytest.raises(asyncpg.UndefinedColumnError, match="no_such_column|oops"):
                await apply(conn, change)
        with pytest.raises(asyncpg.RaiseError, match="number does not change"):
            await apply(conn, {"op": "update", "number": NUMBER, "set": {"number": "R3"}})


async def test_list_patches_merge_and_append_once(order_pool):
    async with order_pool.acquire() as conn:
        await created(conn)
        payment = {"id": 1, "state": "checkout"}
        for _ in range(2):  # appended once: an element with that key is there the second time
            await apply(conn, {"op": "update", "number": NUMBER, "set": {}, "patch": {
                "column": "payments", "how": "append", "key": "id", "value": 1, "with": payment}})
        await apply(conn, {"op": "update", "number": NUMBER, "set": {}, "patch": {
            "column": "payments", "how": "merge", "key": "id", "value": 1, "with": {"state": "completed"}}})
        row = await conn.fetchrow("SELECT payments, shipments FROM order_view WHERE number = $1", NUMBER)
    assert row["payments"] == [{"id": 1, "state": "completed"}] and row["shipments"] == []


async def test_writers_are_planned_once_not_built_per_change(order_pool):
    """The point of the migration: no EXECUTE of text per change (pg_stat_statements would show
    each dynamic UPDATE; here the function bodies carry none)."""
    async with order_pool.acquire() as conn:
        bodies = await conn.fetch("SELECT proname, prosrc FROM pg_proc WHERE proname = ANY($1::text[])"
                                  " AND pronamespace = current_schema()::regnamespace",
                                  ["apply_view_changes", "update_order_view_row", "insert_order_view_row",
                                   "insert_order_line_row"])
    assert len(bodies) == 4 and not [r["proname"] for r in bodies if "EXECUTE" in r["prosrc"].upper()]
