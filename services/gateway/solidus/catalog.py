"""Solidus's catalog: variants (with their stock), products, countries; an admin discards a
variant."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.gateway.availability import availability, forget
from services.gateway.paths import Id
from services.gateway.services import services
from services.gateway.solidus.access import is_admin, require_admin
from services.gateway.solidus.errors import NOT_FOUND, ApiError
from services.gateway.solidus.render import listing, render_variant
from services.gateway.solidus.schemas import CountriesPage, ProductsPage, Variant, VariantsPage, responses
from shared.errors import DomainError
from shared.jsonutil import json_response

router = APIRouter()


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in ("1", "true", "t", "yes", "on")


async def priced_variants(request: Request, *, stock_items: bool = False) -> list[dict]:
    """The variants priced in USD, with their stock. An admin's `show_deleted` includes the
    discarded ones; `in_stock_only` leaves out those that cannot supply one unit."""
    rows = [v for v in await services(request).cart.list_variants(
                currency="USD", include_discarded=is_admin(request) and _flag(request, "show_deleted"))
            if v["price"] is not None]
    available = await availability(request, (v["id"] for v in rows))
    variants = [render_variant(v, "USD", available[v["id"]], stock_items=stock_items) for v in rows]
    if _flag(request, "in_stock_only"):
        variants = [v for v in variants if v["in_stock"]]
    return variants


@router.get("/variants", responses=responses(200, VariantsPage, auth=False))
async def list_variants(request: Request):
    return json_response(listing("variants", await priced_variants(request)))


@router.get("/variants/{variant_id}", responses=responses(200, Variant, auth=False))
async def show_variant(variant_id: Id, request: Request):
    """One variant, with its stock items per location (Solidus's "big" variant)."""
    rows = [v for v in await services(request).cart.list_variants(
                currency="USD", variant_id=variant_id,
                include_discarded=is_admin(request) and _flag(request, "show_deleted"))
            if v["price"] is not None]
    if not rows:
        raise ApiError(404, NOT_FOUND)
    available = await availability(request, [variant_id])
    return json_response(render_variant(rows[0], "USD", available[variant_id], stock_items=True))


@router.delete("/variants/{variant_id}", status_code=204, responses=responses(204))
@router.delete("/products/{product_id}/variants/{variant_id}", status_code=204, responses=responses(204))
async def discard_variant(variant_id: Id, request: Request):
    """An admin discards (soft-deletes) a variant: it is no longer listed or sold, and an
    order holding it cannot be completed."""
    require_admin(request)
    try:
        await services(request).cart.discard_variant(variant_id=variant_id)
    except DomainError:
        raise ApiError(404, NOT_FOUND) from None
    forget(request, variant_id)
    return Response(status_code=204)


@router.get("/products", responses=responses(200, ProductsPage, auth=False))
async def list_products(request: Request):
    products = await services(request).cart.list_products()
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
    rows = await services(request).order.countries()
    items = [{k: c[k] for k in ("id", "iso_name", "iso", "iso3", "name", "numcode", "states_required")}
             | {"states": [{"id": s["id"], "name": s["name"], "abbr": s["abbr"], "country_id": c["id"]}
                           for s in c["states"]]} for c in rows]
    return json_response({"countries": items, "count": len(items), "current_page": 1, "pages": 1})
