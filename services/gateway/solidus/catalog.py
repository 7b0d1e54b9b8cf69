"""Solidus's catalog reads: variants, products, countries."""
from __future__ import annotations

from fastapi import APIRouter, Request

from shared.jsonutil import json_response
from services.gateway.reference import call
from services.gateway.solidus.render import listing, render_variant
from services.gateway.solidus.schemas import CountriesPage, ProductsPage, VariantsPage, responses

router = APIRouter()


async def priced_variants(request: Request) -> list[dict]:
    return [render_variant(v, "USD") for v in await call(request, "cart", "list_variants", currency="USD")
            if v["price"] is not None]


@router.get("/variants", responses=responses(200, VariantsPage, auth=False))
async def list_variants(request: Request):
    return json_response(listing("variants", await priced_variants(request)))


@router.get("/products", responses=responses(200, ProductsPage, auth=False))
async def list_products(request: Request):
    products = await call(request, "cart", "list_products")
    variants = await priced_variants(request)
    rendered = []
    for product in products:
        own = [v for v in variants if v["product_id"] == product["id"]]
        if not own:
            continue
        master = next((v for v in own if v["is_master"]), own[0])
        rendered.append({**product, "price": master["price"], "display_price": master["display_price"],
                         "has_variants": len(own) > 1, "master": master, "variants": own})
    return json_response(listing("products", rendered))


@router.get("/countries", responses=responses(200, CountriesPage, auth=False))
async def countries(request: Request):
    rows = await call(request, "order", "countries")
    items = [{k: c[k] for k in ("id", "iso_name", "iso", "iso3", "name", "numcode", "states_required")}
             | {"states": [{"id": s["id"], "name": s["name"], "abbr": s["abbr"], "country_id": c["id"]}
                           for s in c["states"]]} for c in rows]
    return json_response({"countries": items, "count": len(items), "current_page": 1, "pages": 1})
