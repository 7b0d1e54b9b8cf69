"""GetCandy baskets (§2): basket lines, baskets, discounts. A basket is a Tillstream cart
(its order's lines); lines are refused by the cart once its order is placed or completing."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.gateway.availability import availability
from services.gateway.getcandy.calls import candy_access, candy_order, command, order_view, variants
from services.gateway.getcandy.errors import BASKET_PLACED, COUPON_INVALID, error, invalid, not_found
from services.gateway.getcandy.ids import BASKET_LINES, BASKETS, MAIN, decode, order_number
from services.gateway.getcandy.render import render_basket, respond
from services.gateway.getcandy.requests import body_of, currency_of, quantity_of
from services.gateway.getcandy.schemas import (
    BasketCouponRequest,
    BasketLinesRequest,
    CandyBasketEnvelope,
    DiscountRequest,
    QuantityRequest,
    responses,
    validated,
)
from services.gateway.openapi import request_body
from services.gateway.paths import Hash
from services.gateway.reference import VIEW_WAIT_MS, await_view
from services.gateway.services import services
from shared.validation import ascii_int

router = APIRouter()


async def basket_response(request: Request, order: dict) -> Response:
    available = await availability(request, (line["variant_id"] for line in order["line_items"]))
    return respond({"data": render_basket(order, available)})


MAX_LINES = 100  # variants in one request


async def validate_lines(request: Request, body: dict, currency: str, *, existing: dict[int, int]) -> list[tuple]:
    errors: dict[str, list[str]] = {}
    if "basket_id" in body and order_number(BASKETS, body["basket_id"]) is None:
        errors["basket_id"] = ["The selected basket id is invalid."]
    wanted = body.get("variants")
    if not isinstance(wanted, list) or not wanted:
        errors["variants"] = ["The variants field is required."]
        raise invalid(errors)
    if len(wanted) > MAX_LINES:
        raise invalid({"variants": [f"The variants may not have more than {MAX_LINES} items."]})
    catalog = await variants(request, currency)
    ids = [decode(MAIN, v.get("id")) if isinstance(v, dict) else None for v in wanted]
    if len({i for i in ids if i is not None}) < len([i for i in ids if i is not None]):
        errors["variants"] = ["The variants field has a duplicate value."]
    refused: dict[int, tuple[str, str]] = {}  # line index → its field's error
    lines: list[tuple[int, int, int]] = []  # (index, variant id, quantity)
    for n, (item, variant_id) in enumerate(zip(wanted, ids, strict=True)):
        if variant_id is None or variant_id not in catalog:
            refused[n] = (f"variants.{n}.id", "The variant ID is incorrect")
            continue
        quantity = item.get("quantity")
        if isinstance(quantity, str) and ascii_int(quantity) is not None:
            quantity = ascii_int(quantity)
        if isinstance(quantity, bool) or not isinstance(quantity, int):
            refused[n] = (f"variants.{n}.quantity", f"The variants.{n}.quantity must be a number.")
            continue
        if quantity < 1:
            refused[n] = (f"variants.{n}.quantity", "You must add at least 1 items.")
            continue
        lines.append((n, variant_id, quantity))
    if lines:  # whether stock covers them is the shipping service's judgement
        short = await services(request).shipping.unavailable(lines=[
            {"variant_id": variant_id, "quantity": quantity + existing.get(variant_id, 0),
             "track_inventory": catalog[variant_id]["track_inventory"]} for _, variant_id, quantity in lines])
        refused |= {lines[k][0]: (f"variants.{lines[k][0]}.quantity", "Insufficient stock levels") for k in short}
    errors |= {key: [message] for _, (key, message) in sorted(refused.items())}
    if errors:
        raise invalid(errors)
    return [(variant_id, quantity) for n, variant_id, quantity in lines if n not in refused]


async def add_lines(request: Request, order: dict, lines: list[tuple]) -> list[str]:
    events: list[str] = []
    for variant_id, quantity in lines:
        adding = services(request).cart.add_line_item(order["number"], variant_id=variant_id, quantity=quantity,
                                                      currency=order["currency"])
        events += (await command(request, adding, order=order, placed_message=BASKET_PLACED,
                                 refused=lambda _: error(422, "Unable to add product at this quantity")))["events"]
    return events


async def _basket_lines(request: Request, *, replace: bool) -> Response:
    body = validated(BasketLinesRequest, await body_of(request))
    currency = currency_of(request, body)
    number = order_number(BASKETS, body["basket_id"]) if "basket_id" in body else None
    order = await candy_order(request, number) if number else None
    if number and order is None:
        raise invalid({"basket_id": ["The selected basket id is invalid."]})
    existing = ({} if replace or order is None
                else {item["variant_id"]: item["quantity"] for item in order["line_items"]})
    lines = await validate_lines(request, body, order["currency"] if order else currency, existing=existing)
    if order is None:
        created = await command(request, services(request).order.create_order(
            currency=currency, dialect="getcandy", view_wait_ms=VIEW_WAIT_MS))
        number, order = created["number"], created["order"]
    events: list[str] = []
    if replace:
        for line in order["line_items"]:  # lines are replaced; coupons stay
            events += (await command(request, services(request).cart.remove_line_item(number, line_id=line["id"]),
                                     order=order, placed_message=BASKET_PLACED))["events"]
    events += await add_lines(request, order, lines)
    return await basket_response(request, await order_view(request, number, events))


@router.post("/basket-lines", responses=responses(200, CandyBasketEnvelope),
             openapi_extra=request_body(BasketLinesRequest, form=False))
async def post_basket_lines(request: Request):
    return await _basket_lines(request, replace=False)


@router.post("/baskets", responses=responses(200, CandyBasketEnvelope),
             openapi_extra=request_body(BasketLinesRequest, form=False))
async def post_baskets(request: Request):
    return await _basket_lines(request, replace=True)


def basket_number(basket_id: str) -> str:
    """A basket's order number; 404 for a basket id that is not one."""
    number = order_number(BASKETS, basket_id)
    if number is None:
        raise not_found()
    return number


async def basket(request: Request, basket_id: str) -> tuple[str, dict]:
    """A basket's order number and order view; 404 for a basket id that is not one."""
    number = basket_number(basket_id)
    return number, await order_view(request, number)


@router.get("/baskets/{basket_id}", responses=responses(200, CandyBasketEnvelope))
async def get_basket(basket_id: Hash, request: Request):
    _, order = await basket(request, basket_id)
    return await basket_response(request, order)


async def line_and_basket(request: Request, line_hash: str) -> tuple[int, dict]:
    line_id = decode(BASKET_LINES, line_hash)
    if line_id is None:
        raise not_found()
    found = await command(request, services(request).cart.find_line(line_id=line_id))
    order = await order_view(request, found["order_number"])
    if not any(item["id"] == line_id for item in order["line_items"]):
        raise not_found()
    return line_id, order


async def _set_line(request: Request, order: dict, line_id: int, quantity: int) -> Response:
    number = order["number"]
    refused = lambda refusal: invalid({"quantity": [refusal.message]})  # noqa: E731
    if quantity <= 0:
        result = await command(request, services(request).cart.remove_line_item(number, line_id=line_id),
                               order=order, placed_message=BASKET_PLACED, refused=refused)
    else:
        result = await command(request, services(request).cart.set_line_quantity(number, line_id=line_id,
                                                                                 quantity=quantity),
                               order=order, placed_message=BASKET_PLACED, refused=refused)
    return await basket_response(request, await order_view(request, number, result["events"]))


def current_quantity(order: dict, line_id: int) -> int:
    return next(item["quantity"] for item in order["line_items"] if item["id"] == line_id)


@router.put("/basket-lines/{line_hash}", responses=responses(200, CandyBasketEnvelope),
            openapi_extra=request_body(QuantityRequest, form=False))
async def put_basket_line(line_hash: Hash, request: Request):
    quantity = quantity_of(validated(QuantityRequest, await body_of(request)), default=None)
    if quantity < 1:
        raise invalid({"quantity": ["The quantity must be at least 1."]})
    line_id, order = await line_and_basket(request, line_hash)
    return await _set_line(request, order, line_id, quantity)


@router.post("/basket-lines/{line_hash}/add", responses=responses(200, CandyBasketEnvelope),
             openapi_extra=request_body(QuantityRequest, form=False))
async def add_to_basket_line(line_hash: Hash, request: Request):
    quantity = quantity_of(validated(QuantityRequest, await body_of(request)), default=1)
    line_id, order = await line_and_basket(request, line_hash)
    return await _set_line(request, order, line_id, current_quantity(order, line_id) + quantity)


@router.put("/basket-lines/{line_hash}/remove", responses=responses(200, CandyBasketEnvelope),
            openapi_extra=request_body(QuantityRequest, form=False))
async def remove_from_basket_line(line_hash: Hash, request: Request):
    quantity = quantity_of(validated(QuantityRequest, await body_of(request)), default=1)
    line_id, order = await line_and_basket(request, line_hash)
    return await _set_line(request, order, line_id, current_quantity(order, line_id) - quantity)


@router.delete("/basket-lines/{line_hash}", status_code=204, responses=responses(204))
async def delete_basket_line(line_hash: Hash, request: Request):
    line_id, order = await line_and_basket(request, line_hash)
    result = await command(request, services(request).cart.remove_line_item(order["number"], line_id=line_id),
                           order=order, placed_message=BASKET_PLACED)
    await await_view(request, order["number"], result["events"])
    return Response(status_code=204)


@router.put("/baskets/{basket_id}/discounts", responses=responses(200, CandyBasketEnvelope),
            openapi_extra=request_body(BasketCouponRequest, form=False))
async def add_discount(basket_id: Hash, request: Request):
    body = validated(BasketCouponRequest, await body_of(request))
    number = basket_number(basket_id)
    access = await candy_access(request, number)  # no lines needed before the coupon: no read of the order
    code = body.get("coupon")
    code = code.strip().lower() if isinstance(code, str) else ""
    if not code:
        raise invalid({"coupon": ["The coupon field is required."]})
    result = await command(request, services(request).cart.apply_coupon(number, code=code[:255],
                                                                        currency=access["currency"]),
                           access=access, placed_message=BASKET_PLACED, refused=lambda _: invalid(COUPON_INVALID))
    return await basket_response(request, await order_view(request, number, result["events"]))


@router.delete("/baskets/{basket_id}/discounts", responses=responses(200, CandyBasketEnvelope),
               openapi_extra=request_body(DiscountRequest, form=False))
async def remove_discount(basket_id: Hash, request: Request):
    body = validated(DiscountRequest, await body_of(request))
    number, order = await basket(request, basket_id)
    promotion_id = decode(MAIN, body.get("discount_id"))
    adjustment = next((a for a in order["adjustments"] if a["promotion_id"] == promotion_id), None)
    if adjustment is None:
        raise invalid({"discount_id": ["The selected discount id is invalid."]})
    result = await command(request, services(request).cart.remove_coupon(number, code=adjustment["code"]),
                           order=order, placed_message=BASKET_PLACED)
    return await basket_response(request, await order_view(request, number, result["events"]))
