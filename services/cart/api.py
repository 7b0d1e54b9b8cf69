"""The cart service's operations (its application interface), called through the command
bus: in-process when hosted with the gateway, `POST /bus/<operation>` when alone."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Iterator

from pydantic import BaseModel

from services.cart import commands
from services.cart.domain import Line
from shared.aggregate import not_found
from shared.commandbus import ServiceApi, ServiceContext
from shared.db import Upsert, upsert_all
from shared.validation import ascii_int

api = ServiceApi("cart")
MAX_VARIANTS_QUERY = 1000  # variant ids per call


def line_json(line: Line | None) -> dict | None:
    if line is None:
        return None
    return {"id": line.id, "variant_id": line.variant.id, "quantity": line.quantity, "price": line.price,
            "total": line.amount, "variant": line.variant.model_dump(mode="json")}


@api.operation
async def add_line_item(ctx: ServiceContext, number: str, *, variant_id: Any, quantity: Any = 1,
                        currency: str = "USD") -> dict:
    result = await commands.add_line_item(ctx.pool, number, variant_id=variant_id, quantity=quantity,
                                          currency=currency)
    line = next(line for line in result.aggregate.lines.values() if line.variant.id == ascii_int(variant_id))
    return {"line_item": line_json(line), "events": result.event_ids}


@api.operation
async def set_line_quantity(ctx: ServiceContext, number: str, *, line_id: int, quantity: Any = None) -> dict:
    result = await commands.set_line_quantity(ctx.pool, number, line_id, 0 if quantity is None else quantity)
    return {"line_item": line_json(result.aggregate.lines.get(line_id)), "events": result.event_ids}


@api.operation
async def remove_line_item(ctx: ServiceContext, number: str, *, line_id: int) -> dict:
    return {"events": (await commands.remove_line_item(ctx.pool, number, line_id)).event_ids}


@api.operation
async def empty_cart(ctx: ServiceContext, number: str) -> dict:
    return {"events": (await commands.empty_cart(ctx.pool, number)).event_ids}


@api.operation
async def apply_coupon(ctx: ServiceContext, number: str, *, code: str, currency: str) -> dict:
    """Applies a coupon to the cart of an order in `currency` (a flat coupon only in its own)."""
    return {"events": (await commands.apply_coupon(ctx.pool, number, code, currency)).event_ids}


@api.operation
async def remove_coupon(ctx: ServiceContext, number: str, *, code: str) -> dict:
    return {"events": (await commands.remove_coupon(ctx.pool, number, code)).event_ids}


@api.operation
async def find_line(ctx: ServiceContext, *, line_id: int) -> dict:
    """Which order (cart) a line item belongs to; line ids are global."""
    number = await ctx.pool.fetchval(
        "SELECT aggregate_id FROM events WHERE type = 'cart.LineItemAdded' AND (payload->>'line_item_id')::int = $1",
        line_id)
    if number is None:
        raise not_found("line item")
    return {"order_number": number}


@api.operation
async def list_variants(ctx: ServiceContext, *, currency: str = "USD", include_discarded: bool = False,
                        variant_id: int | None = None) -> list[dict]:
    """The catalog's variants (or the one `variant_id`) priced in `currency` (price None where
    they are not); the discarded ones only when asked for (Solidus's admin `show_deleted`)."""
    rows = await ctx.pool.fetch(
        "SELECT v.id, v.product_id, v.sku, v.name, v.options_text, v.track_inventory, v.is_master,"
        " v.discarded_at IS NOT NULL AS is_destroyed, p.amount AS price, pr.slug, pr.description"
        " FROM variants v JOIN products pr ON pr.id = v.product_id"
        " LEFT JOIN prices p ON p.variant_id = v.id AND p.currency = $1"
        " WHERE ($2 OR v.discarded_at IS NULL) AND ($3::int IS NULL OR v.id = $3) ORDER BY v.id",
        currency, include_discarded is True, variant_id if isinstance(variant_id, int) else None)
    return [dict(r) for r in rows]


@api.operation
async def discard_variant(ctx: ServiceContext, *, variant_id: Any = None) -> dict:
    """Solidus's variant destroy (a soft delete): no longer listed nor added to carts; the
    orders holding it cannot be completed (Cart.lock)."""
    variant_id = ascii_int(variant_id)
    discarded = await ctx.pool.fetchval(
        "UPDATE variants SET discarded_at = coalesce(discarded_at, now()) WHERE id = $1 RETURNING id",
        variant_id) if variant_id is not None and 0 < variant_id < 2**31 else None
    if discarded is None:
        raise not_found("variant")
    return {"variant_id": discarded}


@api.operation
async def discarded_among(ctx: ServiceContext, *, variant_ids: list[int]) -> list[int]:
    """Which of `variant_ids` are discarded."""
    wanted = sorted({v for v in variant_ids if isinstance(v, int) and 0 < v < 2**31})[:MAX_VARIANTS_QUERY]
    return [r["id"] for r in await ctx.pool.fetch(
        "SELECT id FROM variants WHERE id = ANY($1::int[]) AND discarded_at IS NOT NULL ORDER BY id", wanted)]


@api.operation
async def list_products(ctx: ServiceContext) -> list[dict]:
    return [dict(r) for r in await ctx.pool.fetch("SELECT * FROM products ORDER BY id")]


# -- reference data (demo data, imports): admin operations, idempotent upserts --------------
class CatalogVariant(BaseModel):
    id: int
    sku: str
    name: str
    options_text: str = ""
    track_inventory: bool = True
    is_master: bool = False
    prices: dict[str, Decimal]

    def rows(self, product_id: int) -> Iterator[Upsert]:
        yield Upsert("variants", {**self.model_dump(exclude={"prices"}), "product_id": product_id})
        yield from (Upsert("prices", {"variant_id": self.id, "currency": currency, "amount": amount},
                           key=("variant_id", "currency")) for currency, amount in self.prices.items())


class CatalogProduct(BaseModel):
    id: int
    name: str
    slug: str
    description: str = ""
    variants: list[CatalogVariant]

    def rows(self) -> Iterator[Upsert]:
        yield Upsert("products", self.model_dump(exclude={"variants"}))
        yield from (row for variant in self.variants for row in variant.rows(self.id))


class PromotionIn(BaseModel):
    id: int
    name: str
    code: str
    kind: str
    value: Decimal
    starts_at: datetime | None = None
    expires_at: datetime | None = None
    usage_limit: int | None = None
    currency: str = "USD"  # a flat promotion's amount is in it; a percentage ignores it


@api.operation
async def load_catalog(ctx: ServiceContext, *, products: list[dict]) -> dict:
    await upsert_all(ctx.pool, (row for product in map(CatalogProduct.model_validate, products)
                                for row in product.rows()))
    return {"products": len(products)}


@api.operation
async def load_promotions(ctx: ServiceContext, *, promotions: list[dict]) -> dict:
    def row(p: PromotionIn) -> Upsert:
        # A flat amount is money in one currency; a percentage applies in any.
        currency = p.currency.upper() if p.kind == "order_flat" else None
        return Upsert("promotions", {**p.model_dump(), "code": p.code.strip().lower(), "currency": currency})

    await upsert_all(ctx.pool, (row(p) for p in map(PromotionIn.model_validate, promotions)))
    return {"promotions": len(promotions)}
