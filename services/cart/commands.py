"""Application handlers of the cart service: catalog lookups, then the Cart aggregate.

The catalog (a variant with its price, which variants are discarded) is read through the
service's `ReferenceCache` (shared/reference_cache.py): no statement while it is unchanged,
read again in every process once it changes. Promotions and their uses are not: their uses
change with every completion."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import asyncpg

from services.cart.context import CartContext
from services.cart.domain import Cart, Promotion
from shared.aggregate import CommandResult, DomainError, not_found
from shared.contracts.cart import VariantSnapshot
from shared.contracts.order import DeliveryLine
from shared.eventstore import Alongside
from shared.ids import next_id
from shared.steps import TransactionNeeded
from shared.validation import ascii_int


async def find_variant(ctx: CartContext, variant_id: object, currency: str) -> VariantSnapshot:
    variant_id = ascii_int(variant_id)
    if variant_id is None or not 0 < variant_id < 2**31:
        raise not_found("variant")

    async def load() -> asyncpg.Record | None:
        return await ctx.pool.fetchrow(
            "SELECT v.id, v.product_id, v.name, v.sku, v.track_inventory, v.options_text, p.amount AS price"
            " FROM variants v LEFT JOIN prices p ON p.variant_id = v.id AND p.currency = $2"
            " WHERE v.id = $1 AND v.discarded_at IS NULL",
            variant_id, currency)

    row = await ctx.reference.read(("variant", variant_id, currency), ("variants", "prices"), load)
    if row is None:
        raise not_found("variant")
    if row["price"] is None:
        raise DomainError("invalid_price", "is not a number", field="price")
    return VariantSnapshot(**dict(row))


async def discarded_variants(ctx: CartContext, conn: asyncpg.Connection | asyncpg.Pool) -> frozenset[int]:
    """The ids of the variants discarded from the catalog (Solidus soft-deletes: few), read on
    `conn` if they must be read."""
    async def load() -> frozenset[int]:
        return frozenset(r["id"] for r in await conn.fetch("SELECT id FROM variants WHERE discarded_at IS NOT NULL"))

    return await ctx.reference.read(("discarded variants",), ("variants",), load)


async def add_line_item(ctx: CartContext, number: str, *, variant_id: object,
                        quantity: object, currency: str) -> CommandResult[Cart]:
    variant = await find_variant(ctx, variant_id, currency)
    new_line_id = await next_id(ctx.pool, "line_item_ids")
    return await ctx.carts.execute(
        ctx.pool, number, lambda cart: cart.add_line(variant, quantity, new_line_id=new_line_id))


async def set_line_quantity(ctx: CartContext, number: str, line_id: int,
                            quantity: object) -> CommandResult[Cart]:
    return await ctx.carts.execute(ctx.pool, number, lambda cart: cart.set_quantity(line_id, quantity))


async def remove_line_item(ctx: CartContext, number: str, line_id: int) -> CommandResult[Cart]:
    return await ctx.carts.execute(ctx.pool, number, lambda cart: cart.remove_line(line_id))


async def empty_cart(ctx: CartContext, number: str) -> CommandResult[Cart]:
    return await ctx.carts.execute(ctx.pool, number, lambda cart: cart.empty())


async def uses(conn: asyncpg.Connection | asyncpg.Pool, limits: dict[int, int], *,
               besides: str | None = None) -> dict[int, int]:
    """The uses (and reservations) of promotions with a usage limit, each counted only up to
    its limit (all `lapsed` needs to know): a popular coupon's check does not grow with every
    order that ever used it. Promotions without a limit are not counted at all."""
    if not limits:
        return {}
    return dict(await conn.fetch(
        "SELECT l.id, (SELECT count(*) FROM (SELECT 1 FROM promotion_uses u WHERE u.promotion_id = l.id"
        " AND u.order_number IS DISTINCT FROM $3 LIMIT l.cap) AS counted)"
        " FROM unnest($1::int[], $2::int[]) AS l(id, cap)", list(limits), list(limits.values()), besides))


def lapsed(row: asyncpg.Record, used: int, now: datetime) -> str | None:
    """Why a known promotion cannot be used now (a find_promotion refusal code), if it can't."""
    if row["expires_at"] and row["expires_at"] <= now:
        return "coupon_code_expired"
    if row["usage_limit"] is not None and used >= row["usage_limit"]:
        return "coupon_code_max_usage"
    return None


_LAPSED_MESSAGES = {"coupon_code_expired": "The coupon code is expired",
                    "coupon_code_max_usage": "Coupon code usage limit exceeded"}


async def find_promotion(ctx: CartContext, code: str) -> Promotion:
    async def load() -> asyncpg.Record | None:  # reference data (migrations/008): no read while unchanged
        return await ctx.pool.fetchrow("SELECT * FROM promotions WHERE code = $1", code)

    row = await ctx.reference.read(("promotion", code), ("promotions",), load)
    now = datetime.now(timezone.utc)
    if row is None or (row["starts_at"] and row["starts_at"] > now):
        raise DomainError("coupon_code_not_found", "The coupon code you entered doesn't exist. Please try again.")
    used = 0
    if row["usage_limit"] is not None:  # uses and the reservations of completions in progress
        used = (await uses(ctx.pool, {row["id"]: row["usage_limit"]})).get(row["id"], 0)
    refusal = lapsed(row, used, now)
    if refusal:
        raise DomainError(refusal, _LAPSED_MESSAGES[refusal])
    return Promotion(row["id"], row["code"], row["name"], row["kind"], Decimal(row["value"]), row["currency"])


async def apply_coupon(ctx: CartContext, number: str, code: str, currency: str) -> CommandResult[Cart]:
    promotion = await find_promotion(ctx, code)
    return await ctx.carts.execute(ctx.pool, number, lambda cart: cart.apply_promotion(promotion, currency=currency))


async def remove_coupon(ctx: CartContext, number: str, code: str) -> CommandResult[Cart]:
    if not await ctx.pool.fetchval("SELECT true FROM promotions WHERE code = $1", code):
        raise DomainError("coupon_code_not_found", "The coupon code you entered doesn't exist. Please try again.")
    return await ctx.carts.execute(ctx.pool, number, lambda cart: cart.remove_promotion(code))


# -- the completion saga's step 1 (CartService.lock_cart, unlock_cart: operations.py) -------
async def lock_cart(ctx: CartContext, conn: asyncpg.Connection, number: str, request_id: str,
                    lines: list[DeliveryLine]) -> None:
    """Lock the cart and reserve its promotions, or refuse (Cart.lock). The promotions with a
    usage limit are row-locked first and their uses counted after, so of two orders racing for
    a coupon's last use the second sees the first's reservation: that needs the step's
    transaction (`TransactionNeeded` on a connection outside one). Otherwise the step is one
    statement: the reservation rides in the cart's append (`Alongside`). On the cart as this
    process last committed it, if it has it: a cart behind the stream conflicts, and the step's
    retry (its writes rolled back) reads the stream."""
    def answered(cart: Cart) -> bool:  # for good: a trusted cart that says so needs no read
        return request_id in cart.lock_answered or request_id in cart.unlock_answered

    async def lock(cart: Cart) -> None:
        if answered(cart):
            return  # before any write: a no-op on a trusted cart may be decided again (Repository.run)
        ids = sorted(promotion.id for promotion in cart.promotions.values())
        lapsed_codes: set[str] = set()
        if ids:
            rows = await promotions_of(ctx, ids)
            limited = {row["id"]: row["usage_limit"] for row in rows if row["usage_limit"] is not None}
            if limited:  # locked, and read as locked: their uses are counted against their limit
                if not conn.is_in_transaction():
                    raise TransactionNeeded
                rows = [row for row in rows if row["id"] not in limited] + list(await conn.fetch(
                    "SELECT * FROM promotions WHERE id = ANY($1::int[]) ORDER BY id FOR UPDATE", sorted(limited)))
                limited = {row["id"]: row["usage_limit"] for row in rows if row["usage_limit"] is not None}
            used = await uses(conn, limited, besides=number)
            now = datetime.now(timezone.utc)
            lapsed_codes = {row["code"] for row in rows if lapsed(row, used.get(row["id"], 0), now)}
        discarded = await discarded_variants(ctx, conn)
        cart.lock(request_id, expected=[(line.variant_id, line.quantity) for line in lines],
                  lapsed_codes=lapsed_codes, reservable=ids, discarded_variants=discarded)

    def reservation(cart: Cart) -> Alongside | None:  # the promotions a lock recorded now reserves
        if not (cart.pending and cart.locked_by == request_id and cart.promotions):
            return None
        return Alongside("INSERT INTO promotion_uses (promotion_id, order_number) SELECT unnest($1::int[]), $2"
                         " ON CONFLICT DO NOTHING", (sorted(p.id for p in cart.promotions.values()), number))

    await ctx.carts.run(conn, number, lock, settled=answered, alongside=reservation)


async def promotions_of(ctx: CartContext, ids: list[int]) -> tuple[asyncpg.Record, ...]:
    """The promotions' definitions (reference data, migrations/008). Those with a usage limit are
    read again by the caller, row-locked, so that of two orders racing for the last use the
    second counts the first's reservation; the others need no lock (nothing counts them)."""
    async def load() -> tuple[asyncpg.Record, ...]:
        return tuple(await ctx.pool.fetch("SELECT * FROM promotions WHERE id = ANY($1::int[]) ORDER BY id", ids))

    return await ctx.reference.read(("promotions", tuple(ids)), ("promotions",), load)


async def unlock_cart(ctx: CartContext, conn: asyncpg.Connection, number: str, request_id: str) -> None:
    """Compensation of step 1: unlock and free the reservations (answered even if not locked)."""
    cart = await ctx.carts.load(conn, number)
    released = cart.unlock(request_id)
    if released:
        await conn.execute("DELETE FROM promotion_uses WHERE order_number = $1 AND promotion_id = ANY($2::int[])"
                           " AND NOT completed", number, released)
    await ctx.carts.save(conn, cart)
