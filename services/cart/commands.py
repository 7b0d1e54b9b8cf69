"""Application handlers of the cart service: catalog lookups, then the Cart aggregate."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import asyncpg

from shared.aggregate import CommandResult, DomainError, Repository, not_found
from shared.bus import events_topic
from shared.contracts.cart import VariantSnapshot
from shared.eventstore import EventStore
from services.cart.domain import Cart, Promotion

CART_STORE = EventStore("cart", events_topic("cart"))
CARTS = Repository(CART_STORE, Cart)


async def find_variant(conn: asyncpg.Connection | asyncpg.Pool, variant_id: object, currency: str) -> VariantSnapshot:
    if isinstance(variant_id, str) and variant_id.isdigit():
        variant_id = int(variant_id)
    if isinstance(variant_id, bool) or not isinstance(variant_id, int) or not 0 < variant_id < 2**31:
        raise not_found("variant")
    row = await conn.fetchrow(
        "SELECT v.id, v.product_id, v.name, v.sku, v.track_inventory, v.options_text, p.amount AS price"
        " FROM variants v LEFT JOIN prices p ON p.variant_id = v.id AND p.currency = $2 WHERE v.id = $1",
        variant_id, currency)
    if row is None:
        raise not_found("variant")
    if row["price"] is None:
        raise DomainError("invalid_price", "is not a number", field="price")
    return VariantSnapshot(**dict(row))


async def add_line_item(pool: asyncpg.Pool, number: str, *, variant_id: object,
                        quantity: object, currency: str) -> CommandResult[Cart]:
    variant = await find_variant(pool, variant_id, currency)
    new_line_id = await pool.fetchval("SELECT nextval('line_item_ids')")
    return await CARTS.execute(
        pool, number, lambda cart: cart.add_line(variant, quantity, new_line_id=new_line_id))


async def set_line_quantity(pool: asyncpg.Pool, number: str, line_id: int,
                            quantity: object) -> CommandResult[Cart]:
    return await CARTS.execute(pool, number, lambda cart: cart.set_quantity(line_id, quantity))


async def remove_line_item(pool: asyncpg.Pool, number: str, line_id: int) -> CommandResult[Cart]:
    return await CARTS.execute(pool, number, lambda cart: cart.remove_line(line_id))


async def empty_cart(pool: asyncpg.Pool, number: str) -> CommandResult[Cart]:
    return await CARTS.execute(pool, number, lambda cart: cart.empty())


async def find_promotion(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> Promotion:
    row = await conn.fetchrow("SELECT * FROM promotions WHERE code = $1", code)
    now = datetime.now(timezone.utc)
    if row is None or (row["starts_at"] and row["starts_at"] > now):
        raise DomainError("coupon_code_not_found", "The coupon code you entered doesn't exist. Please try again.")
    if row["expires_at"] and row["expires_at"] <= now:
        raise DomainError("coupon_code_expired", "The coupon code is expired")
    if row["usage_limit"] is not None:
        used = await conn.fetchval("SELECT count(*) FROM promotion_uses WHERE promotion_id = $1", row["id"])
        if used >= row["usage_limit"]:
            raise DomainError("coupon_code_max_usage", "Coupon code usage limit exceeded")
    return Promotion(row["id"], row["code"], row["name"], row["kind"], Decimal(row["value"]))


async def apply_coupon(pool: asyncpg.Pool, number: str, code: str) -> CommandResult[Cart]:
    promotion = await find_promotion(pool, code)
    return await CARTS.execute(pool, number, lambda cart: cart.apply_promotion(promotion))


# find_promotion's refusals that a coupon can earn after it was applied.
_LAPSED = ("coupon_code_expired", "coupon_code_max_usage")


async def ineligible_promotions(pool: asyncpg.Pool, number: str) -> list[str]:
    """The codes on this cart that no longer apply: expired since they were applied, or
    used up by other orders that completed meanwhile (Solidus re-checks them at `complete`),
    judged by the rules that admitted them (`find_promotion`)."""
    cart = await CARTS.load(pool, number)
    lapsed = []
    for code in sorted(cart.promotions):
        try:
            await find_promotion(pool, code)
        except DomainError as refusal:
            if refusal.code in _LAPSED:
                lapsed.append(code)
    return lapsed


async def remove_coupon(pool: asyncpg.Pool, number: str, code: str) -> CommandResult[Cart]:
    if not await pool.fetchval("SELECT true FROM promotions WHERE code = $1", code):
        raise DomainError("coupon_code_not_found", "The coupon code you entered doesn't exist. Please try again.")
    return await CARTS.execute(pool, number, lambda cart: cart.remove_promotion(code))
