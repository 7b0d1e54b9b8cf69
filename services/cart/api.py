"""The cart service's internal HTTP API (called by the gateway, which has authorised the caller)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from shared.db import upsert
from shared.validation import ascii_int

from services.cart import commands
from services.cart.domain import Line

router = APIRouter()


def line_json(line: Line | None) -> dict | None:
    if line is None:
        return None
    return {"id": line.id, "variant_id": line.variant.id, "quantity": line.quantity, "price": str(line.price),
            "total": str(line.amount), "variant": line.variant.model_dump(mode="json")}



class AddLineItem(BaseModel):
    variant_id: Any = None
    quantity: Any = 1
    currency: str = "USD"


class SetQuantity(BaseModel):
    quantity: Any = None


class Coupon(BaseModel):
    code: str


@router.post("/orders/{number}/line_items", status_code=201)
async def add_line_item(number: str, body: AddLineItem, request: Request):
    s = request.app.state
    result = await commands.add_line_item(s.pool, number, variant_id=body.variant_id,
                                          quantity=body.quantity, currency=body.currency)
    line = next(l for l in result.aggregate.lines.values() if l.variant.id == ascii_int(body.variant_id))
    return {"line_item": line_json(line), "events": result.event_ids}


@router.patch("/orders/{number}/line_items/{line_id}")
async def set_line_quantity(number: str, line_id: int, body: SetQuantity, request: Request):
    s = request.app.state
    quantity = 0 if body.quantity is None else body.quantity
    result = await commands.set_line_quantity(s.pool, number, line_id, quantity)
    return {"line_item": line_json(result.aggregate.lines.get(line_id)), "events": result.event_ids}


@router.delete("/orders/{number}/line_items/{line_id}")
async def remove_line_item(number: str, line_id: int, request: Request):
    s = request.app.state
    return {"events": (await commands.remove_line_item(s.pool, number, line_id)).event_ids}


@router.put("/orders/{number}/empty")
async def empty(number: str, request: Request):
    s = request.app.state
    return {"events": (await commands.empty_cart(s.pool, number)).event_ids}


@router.post("/orders/{number}/coupon_codes")
async def apply_coupon(number: str, body: Coupon, request: Request):
    s = request.app.state
    return {"events": (await commands.apply_coupon(s.pool, number, body.code)).event_ids}


@router.delete("/orders/{number}/coupon_codes/{code}")
async def remove_coupon(number: str, code: str, request: Request):
    s = request.app.state
    return {"events": (await commands.remove_coupon(s.pool, number, code)).event_ids}


@router.get("/line_items/{line_id}")
async def find_line(line_id: int, request: Request):
    """Which order (cart) a line item belongs to; line ids are global."""
    number = await request.app.state.pool.fetchval(
        "SELECT aggregate_id FROM events WHERE type = 'cart.LineItemAdded' AND (payload->>'line_item_id')::int = $1",
        line_id)
    if number is None:
        raise HTTPException(404, "line item not found")
    return {"order_number": number}


@router.get("/variants")
async def list_variants(request: Request, currency: str = "USD"):
    rows = await request.app.state.pool.fetch(
        "SELECT v.id, v.product_id, v.sku, v.name, v.options_text, v.track_inventory, v.is_master,"
        " p.amount AS price, pr.slug, pr.description FROM variants v JOIN products pr ON pr.id = v.product_id"
        " LEFT JOIN prices p ON p.variant_id = v.id AND p.currency = $1 ORDER BY v.id", currency)
    return [{**dict(r), "price": None if r["price"] is None else str(r["price"])} for r in rows]


@router.get("/products")
async def list_products(request: Request):
    return [dict(r) for r in await request.app.state.pool.fetch("SELECT * FROM products ORDER BY id")]


class CatalogVariant(BaseModel):
    id: int
    sku: str
    name: str
    options_text: str = ""
    track_inventory: bool = True
    is_master: bool = False
    prices: dict[str, Decimal]


class CatalogProduct(BaseModel):
    id: int
    name: str
    slug: str
    description: str = ""
    variants: list[CatalogVariant]


class PromotionIn(BaseModel):
    id: int
    name: str
    code: str
    kind: str
    value: Decimal
    starts_at: str | None = None
    expires_at: str | None = None
    usage_limit: int | None = None


@router.put("/admin/catalog")
async def load_catalog(products: list[CatalogProduct], request: Request):
    """Upserts reference data (demo data, imports); idempotent."""
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        for p in products:
            await upsert(conn, "products", p.model_dump(exclude={"variants"}))
            for v in p.variants:
                await upsert(conn, "variants", {**v.model_dump(exclude={"prices"}), "product_id": p.id})
                for currency, amount in v.prices.items():
                    await upsert(conn, "prices", {"variant_id": v.id, "currency": currency, "amount": amount},
                                 key=("variant_id", "currency"))
    return {"products": len(products)}


@router.put("/admin/promotions")
async def load_promotions(promotions: list[PromotionIn], request: Request):
    from datetime import datetime

    parse = lambda v: datetime.fromisoformat(v) if v else None  # noqa: E731
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        for p in promotions:
            await upsert(conn, "promotions", {**p.model_dump(), "code": p.code.strip().lower(),
                                              "starts_at": parse(p.starts_at), "expires_at": parse(p.expires_at)})
    return {"promotions": len(promotions)}

