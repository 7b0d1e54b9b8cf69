"""The cart service's operations: `CartOperations`, the implementation of `CartService`
(services/cart/api.py), built from the service's context in each process that hosts it and
called through shared/rpc.py (in-process, or `POST /bus/<operation>` when alone)."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Iterator, cast

from pydantic import BaseModel

from services.cart import commands
from services.cart.api import (
    Ack,
    CartService,
    CatalogLoaded,
    Discarded,
    LineAnswer,
    LineFound,
    LineItem,
    Product,
    PromotionsLoaded,
    Variant,
)
from services.cart.context import CartContext
from services.cart.domain import Cart, Line
from shared.aggregate import not_found
from shared.contracts import cart as c
from shared.contracts.order import DeliveryLine
from shared.db import Upsert, upsert_all
from shared.steps import StepReply, run_step
from shared.validation import ascii_int

MAX_VARIANTS_QUERY = 1000  # variant ids per call


def line_json(line: Line | None) -> LineItem | None:
    if line is None:
        return None
    return cast(LineItem, {"id": line.id, "variant_id": line.variant.id, "quantity": line.quantity,
                           "price": line.price, "total": line.amount, "variant": line.variant.model_dump(mode="json")})


class CartOperations(CartService):
    def __init__(self, ctx: CartContext) -> None:
        self.ctx = ctx

    async def add_line_item(self, number: str, *, variant_id: Any, quantity: Any = 1,
                            currency: str = "USD") -> LineAnswer:
        result = await commands.add_line_item(self.ctx, number, variant_id=variant_id, quantity=quantity,
                                              currency=currency)
        line = next(line for line in result.aggregate.lines.values() if line.variant.id == ascii_int(variant_id))
        return {"line_item": line_json(line), "events": result.event_ids}

    async def set_line_quantity(self, number: str, *, line_id: int, quantity: Any = None) -> LineAnswer:
        result = await commands.set_line_quantity(self.ctx, number, line_id, 0 if quantity is None else quantity)
        return {"line_item": line_json(result.aggregate.lines.get(line_id)), "events": result.event_ids}

    async def remove_line_item(self, number: str, *, line_id: int) -> Ack:
        return {"events": (await commands.remove_line_item(self.ctx, number, line_id)).event_ids}

    async def empty_cart(self, number: str) -> Ack:
        return {"events": (await commands.empty_cart(self.ctx, number)).event_ids}

    async def apply_coupon(self, number: str, *, code: str, currency: str) -> Ack:
        return {"events": (await commands.apply_coupon(self.ctx, number, code, currency)).event_ids}

    async def remove_coupon(self, number: str, *, code: str) -> Ack:
        return {"events": (await commands.remove_coupon(self.ctx, number, code)).event_ids}

    async def find_line(self, *, line_id: int) -> LineFound:
        number = await self.ctx.pool.fetchval(
            "SELECT aggregate_id FROM events WHERE type = 'cart.LineItemAdded'"
            " AND (payload->>'line_item_id')::int = $1", line_id)
        if number is None:
            raise not_found("line item")
        return {"order_number": number}

    async def list_variants(self, *, currency: str = "USD", include_discarded: bool = False,
                            variant_id: int | None = None) -> list[Variant]:
        rows = await self.ctx.pool.fetch(
            "SELECT v.id, v.product_id, v.sku, v.name, v.options_text, v.track_inventory, v.is_master,"
            " v.discarded_at IS NOT NULL AS is_destroyed, p.amount AS price, pr.slug, pr.description"
            " FROM variants v JOIN products pr ON pr.id = v.product_id"
            " LEFT JOIN prices p ON p.variant_id = v.id AND p.currency = $1"
            " WHERE ($2 OR v.discarded_at IS NULL) AND ($3::int IS NULL OR v.id = $3) ORDER BY v.id",
            currency, include_discarded is True, variant_id if isinstance(variant_id, int) else None)
        return [cast(Variant, dict(r)) for r in rows]

    async def discard_variant(self, *, variant_id: Any = None) -> Discarded:
        variant_id = ascii_int(variant_id)
        discarded = await self.ctx.pool.fetchval(
            "UPDATE variants SET discarded_at = coalesce(discarded_at, now()) WHERE id = $1 RETURNING id",
            variant_id) if variant_id is not None and 0 < variant_id < 2**31 else None
        if discarded is None:
            raise not_found("variant")
        return {"variant_id": discarded}

    async def discarded_among(self, *, variant_ids: list[int]) -> list[int]:
        wanted = sorted({v for v in variant_ids if isinstance(v, int) and 0 < v < 2**31})[:MAX_VARIANTS_QUERY]
        return sorted(set(wanted) & await commands.discarded_variants(self.ctx, self.ctx.pool))

    async def list_products(self) -> list[Product]:
        return [cast(Product, dict(r)) for r in await self.ctx.pool.fetch("SELECT * FROM products ORDER BY id")]

    async def load_catalog(self, *, products: list[dict[str, Any]]) -> CatalogLoaded:
        await upsert_all(self.ctx.pool, (row for product in map(CatalogProduct.model_validate, products)
                                         for row in product.rows()))
        return {"products": len(products)}

    async def load_promotions(self, *, promotions: list[dict[str, Any]]) -> PromotionsLoaded:
        def row(p: PromotionIn) -> Upsert:
            # A flat amount is money in one currency; a percentage applies in any.
            currency = p.currency.upper() if p.kind == "order_flat" else None
            return Upsert("promotions", {**p.model_dump(), "code": p.code.strip().lower(), "currency": currency})

        await upsert_all(self.ctx.pool, (row(p) for p in map(PromotionIn.model_validate, promotions)))
        return {"promotions": len(promotions)}

    async def lock_cart(self, number: str, *, saga_id: str, lines: list[dict[str, Any]]) -> StepReply:
        locked = [DeliveryLine.model_validate(line) for line in lines]
        return await run_step(self.ctx.pool, self.ctx.store, Cart.aggregate_type, number, saga_id,
                              (c.CartLocked, c.CartLockRefused),
                              lambda conn: commands.lock_cart(self.ctx, conn, number, saga_id, locked),
                              one_statement=True)

    async def unlock_cart(self, number: str, *, saga_id: str) -> StepReply:
        return await run_step(self.ctx.pool, self.ctx.store, Cart.aggregate_type, number, saga_id,
                              (c.CartUnlocked,), lambda conn: commands.unlock_cart(self.ctx, conn, number, saga_id))


# -- reference data (demo data, imports): the loaders' input, validated -----------------------
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
