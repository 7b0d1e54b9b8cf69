"""GetCandy orders (§3): from a basket, addresses, shipping methods and cost, contact. An
order's changes are refused by the service that owns them once it is placed (403)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.gateway.getcandy.calls import advance, candy_order, command, order_view
from services.gateway.getcandy.errors import BASKET_PLACED, ORDER_PLACED, error, invalid, not_found
from services.gateway.getcandy.ids import BASKETS, MAIN, ORDERS, decode, order_number
from services.gateway.getcandy.render import minor, render_order, respond
from services.gateway.getcandy.requests import body_of, includes_of, validate_address
from services.gateway.getcandy.schemas import (
    CandyAddressRequest,
    CandyList,
    CandyOrderEnvelope,
    ContactRequest,
    OrderRequest,
    PriceRequest,
    responses,
    validated,
)
from services.gateway.openapi import request_body
from services.gateway.paths import Hash
from services.gateway.reference import VIEW_WAIT_MS
from services.gateway.services import services
from shared.money import truncate_to_cents

router = APIRouter()


def number_of(order_hash: Any) -> str:
    number = order_number(ORDERS, order_hash)
    if number is None:
        raise not_found()
    return number


async def find_order(request: Request, order_hash: Any) -> dict:
    return await order_view(request, number_of(order_hash))


@router.post("/orders", responses=responses(200, CandyOrderEnvelope), openapi_extra=request_body(OrderRequest,
                                                                                                 form=False))
async def create_order(request: Request):
    body = validated(OrderRequest, await body_of(request))
    if not body.get("basket_id"):
        raise invalid({"basket_id": ["The basket id field is required."]})
    number = order_number(BASKETS, body["basket_id"])
    order = await candy_order(request, number) if number else None
    if order is None:
        raise invalid({"basket_id": ["The selected basket id is invalid."]})
    if order.get("completed_at"):
        raise error(403, BASKET_PLACED)
    if order["state"] == "cart" and order["line_items"]:
        order = await advance(request, number)  # the basket becomes an order awaiting its details
    return respond({"data": render_order(order, includes_of(request, body))})


@router.get("/orders/{order_hash}", responses=responses(200, CandyOrderEnvelope))
async def show_order(order_hash: Hash, request: Request):
    return respond({"data": render_order(await find_order(request, order_hash), includes_of(request))})


def address_refused(refusal) -> Exception:
    problem = refusal.details.get("errors", {})
    return invalid({key.split(".", 1)[-1].replace("zipcode", "zip"): messages for key, messages in problem.items()}
                   or {"country": ["The selected country is invalid."]})


async def _set_address(request: Request, order_hash: str, kind: str) -> Response:
    body = validated(CandyAddressRequest, await body_of(request))
    address = validate_address(body)  # validation comes before the lookup, as in the original
    # An unknown order is the command's own 404: no read precedes it.
    updating = services(request).order.update_details(number_of(order_hash), require_phone=False,
                                                      view_wait_ms=VIEW_WAIT_MS, **{f"{kind}_address": address})
    result = await command(request, updating, refused=address_refused)
    return respond({"data": render_order(result["order"], includes_of(request, body))})


@router.put("/orders/{order_hash}/shipping/address", responses=responses(200, CandyOrderEnvelope),
            openapi_extra=request_body(CandyAddressRequest, form=False))
async def shipping_address(order_hash: Hash, request: Request):
    return await _set_address(request, order_hash, "ship")


@router.put("/orders/{order_hash}/billing/address", responses=responses(200, CandyOrderEnvelope),
            openapi_extra=request_body(CandyAddressRequest, form=False))
async def billing_address(order_hash: Hash, request: Request):
    return await _set_address(request, order_hash, "bill")


async def shipping_options(request: Request, order: dict) -> list[dict]:
    ship = order.get("ship_address")
    if not ship:
        return []
    return await services(request).shipping.estimated_rates(country_iso=ship["country_iso"],
                                                            currency=order["currency"])


@router.get("/orders/{order_hash}/shipping/methods", responses=responses(200, CandyList))
async def shipping_methods(order_hash: Hash, request: Request):
    order = await find_order(request, order_hash)
    rate = Decimal(order["tax_rate"])
    return respond({"data": [{
        "id": MAIN.encode(m["shipping_method_id"]), "rate": minor(m["cost"]),
        "tax": minor(truncate_to_cents(Decimal(m["cost"]) * rate)), "fixed": True, "min_basket": 0, "min_basket_tax": 0,
        "min_weight": 0, "weight_unit": "kg", "max_weight": 0, "max_height": 0, "max_width": 0, "max_depth": 0,
        "method": {"data": {"id": MAIN.encode(m["shipping_method_id"]), "type": "standard", "name": m["name"],
                            "description": "", "code": m["code"]}},
        "zone": {"data": {"id": MAIN.encode(m["shipping_method_id"]), "name": m["zone"]}},
    } for m in await shipping_options(request, order)]})


@router.put("/orders/{order_hash}/shipping/cost", responses=responses(200, CandyOrderEnvelope),
            openapi_extra=request_body(PriceRequest, form=False))
async def shipping_cost(order_hash: Hash, request: Request):
    body = validated(PriceRequest, await body_of(request))
    if not body.get("price_id"):
        raise invalid({"price_id": ["Please choose a shipping option"]})
    method_id = decode(MAIN, body["price_id"])
    if method_id is None:
        raise invalid({"price_id": ["The selected price id is invalid."]})
    order = await find_order(request, order_hash)
    number = order["number"]
    if order.get("completed_at"):
        raise error(403, ORDER_PLACED)
    if order["state"] == "address":
        order = await advance(request, number)  # shipments and their rates are built
    if order["state"] not in ("delivery", "payment", "confirm") or not order["shipments"]:
        raise invalid({"price_id": ["The shipping address is required first."]})
    events: list[str] = []
    for shipment in order["shipments"]:
        selecting = services(request).shipping.select_method(number, shipment_number=shipment["number"],
                                                             shipping_method_id=method_id)
        refused = lambda _: invalid({"price_id": ["The selected price id is invalid."]})  # noqa: E731
        events += (await command(request, selecting, order=order, refused=refused))["events"]
    order = await order_view(request, number, events)
    return respond({"data": render_order(order, includes_of(request, body))})


@router.put("/orders/{order_hash}/contact", responses=responses(200, CandyOrderEnvelope),
            openapi_extra=request_body(ContactRequest, form=False))
async def contact(order_hash: Hash, request: Request):
    body = validated(ContactRequest, await body_of(request))
    email, phone = body.get("email") or None, body.get("phone") or None
    if not isinstance(email, (str, type(None))) or not isinstance(phone, (str, int, type(None))) \
            or len(str(email or "")) > 254 or len(str(phone or "")) > 40:
        raise invalid({"email": ["The email must be a valid email address."]})
    updating = services(request).order.update_contact(number_of(order_hash), email=email,
                                                      phone=None if phone is None else str(phone),
                                                      view_wait_ms=VIEW_WAIT_MS)
    result = await command(request, updating,
                           refused=lambda _: invalid({"email": ["The email must be a valid email address."]}))
    return respond({"data": render_order(result["order"], includes_of(request, body))})
