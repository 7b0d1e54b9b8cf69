"""GetCandy's catalog read: products, with their variants on request."""
from __future__ import annotations

from fastapi import APIRouter, Request

from services.gateway.availability import availability
from services.gateway.getcandy.calls import variants
from services.gateway.getcandy.ids import MAIN
from services.gateway.getcandy.render import render_variant, respond
from services.gateway.getcandy.requests import currency_of, includes_of
from services.gateway.getcandy.schemas import CandyList, responses
from services.gateway.services import services

router = APIRouter()


@router.get("/products", responses=responses(200, CandyList))
async def products(request: Request):
    currency = currency_of(request)
    rows = await services(request).cart.list_products()
    catalog = await variants(request, currency)
    with_variants = "variants" in includes_of(request)
    available = await availability(request, catalog) if with_variants else {}
    data = []
    for product in rows:
        own = [render_variant(v, available.get(v["id"])) for v in catalog.values() if v["product_id"] == product["id"]]
        if not own:
            continue
        item = {"id": MAIN.encode(product["id"]), "name": product["name"], "slug": product["slug"],
                "description": product["description"]}
        if with_variants:
            item["variants"] = {"data": own}
        data.append(item)
    return respond({"data": data})
