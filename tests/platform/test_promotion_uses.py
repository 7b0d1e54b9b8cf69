"""A coupon's uses are counted only up to its usage limit, and not at all without one
(services/cart/commands.py `uses`): the check that locks a cart does not grow with every order
that ever used a popular coupon (the soak's cost per checkout crept up with its history)."""
from __future__ import annotations

from datetime import datetime, timezone

from services.cart.commands import lapsed, uses
from tests.conftest import ROOT, fresh_schema, schema_pool


async def test_uses_are_counted_up_to_the_limit_only(stack, unique):
    async with fresh_schema(stack, f"c_{unique}", ROOT / "services" / "cart" / "migrations") as cart, \
            schema_pool(stack, cart, max_size=1) as pool:
        await pool.execute("INSERT INTO promotions (id, name, code, kind, value, currency, usage_limit) VALUES"
                           " (1, 'Ten off', '10off', 'order_flat', 10, 'USD', NULL),"
                           " (2, 'Two only', 'two', 'order_flat', 5, 'USD', 2)")
        await pool.execute("INSERT INTO promotion_uses (promotion_id, order_number)"
                           " SELECT p, 'R' || n FROM unnest(ARRAY[1, 2]) AS p, generate_series(1, 500) AS n")
        assert await uses(pool, {}) == {}  # no limit: nothing to count, no statement
        assert await uses(pool, {2: 2}) == {2: 2}  # 500 uses, counted to the limit: enough to refuse
        assert await uses(pool, {2: 1000}) == {2: 500}
        assert await uses(pool, {2: 501}, besides="R7") == {2: 499}  # a cart's own reservation is not a use
        row = await pool.fetchrow("SELECT * FROM promotions WHERE id = 2")
        assert lapsed(row, (await uses(pool, {2: 2}))[2], datetime.now(timezone.utc)) == "coupon_code_max_usage"
