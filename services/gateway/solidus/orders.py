"""Solidus orders: create, show, empty, coupon codes, and an admin's cancel."""
from __future__ import annotations

from typing import Awaitable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.cart.api import Ack
from services.gateway.openapi import request_body
from services.gateway.order_access import placed_unsaid, remember
from services.gateway.paths import Code, OrderNumber
from services.gateway.reference import VIEW_WAIT_MS, await_view, fetch_order
from services.gateway.services import services
from services.gateway.solidus.access import REQUIRE_API_KEY, authorize, authorize_access, is_admin, require_admin
from services.gateway.solidus.calls import command
from services.gateway.solidus.errors import LOCKED_CODES, ApiError, refused_while_locked
from services.gateway.solidus.render import order_response
from services.gateway.solidus.requests import CouponRequest, params, validated
from services.gateway.solidus.schemas import CouponResult, Order, responses
from services.order.api import AccessFacts
from shared.errors import DomainError
from shared.jsonutil import json_response

router = APIRouter()


@router.post("/orders", status_code=201, responses=responses(201, Order))
async def create_order(request: Request):
    admin = is_admin(request)
    if REQUIRE_API_KEY and not admin:
        raise ApiError(401, {"error": "You must specify an API key."})
    created = await command(request, services(request).order.create_order(dialect="solidus", view_wait_ms=VIEW_WAIT_MS))
    remember(request, created["order"])  # the guest's next steps are authorised with no read
    return await order_response(request, created["order"], 201, token=created["token"])


@router.get("/orders/{number}", responses=responses(200, Order))
async def show_order(number: OrderNumber, request: Request):
    return await order_response(request, await authorize(request, number))


@router.put("/orders/{number}/empty", responses=responses(200, Order, locked=True))
async def empty_order(number: OrderNumber, request: Request):
    order = await authorize_access(request, number, body=await params(request))
    result = await command(request, services(request).cart.empty_cart(number), access=order)
    return await order_response(request, await fetch_order(request, number, result["events"]))


@router.put("/orders/{number}/cancel", responses=responses(200, Order))
async def cancel(number: OrderNumber, request: Request):
    """Admin: cancel a completed order; stock is restocked and payments voided or refunded
    by the shipping and payment services reacting to order.OrderCanceled."""
    require_admin(request)
    await authorize_access(request, number)
    result = await command(request, services(request).order.cancel(number, view_wait_ms=VIEW_WAIT_MS), number=number)
    return await order_response(request, result["order"])


# -- coupon codes ---------------------------------------------------------------
COUPON_MESSAGES = {
    "coupon_code_applied": "The coupon code was successfully applied to your order.",
    "coupon_code_removed": "The coupon code was successfully removed from this order.",
}


def coupon_body(status_code: str | None, *, success: bool, message: str | None) -> dict:
    return {"success": message if success else None, "error": None if success else message,
            "successful": success, "status_code": status_code}


async def _coupon(request: Request, order: AccessFacts, call: Awaitable[Ack], done: str) -> Response:
    """The answer of `call` (applying or removing a coupon) in Solidus's coupon shape."""
    number = order["number"]
    try:
        result = await call
    except DomainError as refusal:
        if refusal.code in LOCKED_CODES:
            # Placed or completing: the view says which (read on this refusal only).
            placed = placed_unsaid(refusal) and bool((await fetch_order(request, number) or {}).get("completed_at"))
            raise refused_while_locked(number, refusal.code, placed=placed, admin=is_admin(request)) from None
        return json_response(coupon_body(refusal.code, success=False, message=refusal.message), 422)
    await await_view(request, number, result["events"])
    return json_response(coupon_body(done, success=True, message=COUPON_MESSAGES[done]))


@router.post("/orders/{number}/coupon_codes", responses=responses(200, CouponResult, locked=True),
             openapi_extra=request_body(CouponRequest))
async def apply_coupon(number: OrderNumber, request: Request):
    body = validated(CouponRequest, await params(request))
    order = await authorize_access(request, number, body=body)
    code = body.get("coupon_code")
    code = code.strip().lower() if isinstance(code, str) else ""
    if not code:
        return json_response(coupon_body(None, success=False, message=None), 422)
    applying = services(request).cart.apply_coupon(number, code=code, currency=order["currency"])
    return await _coupon(request, order, applying, "coupon_code_applied")


@router.delete("/orders/{number}/coupon_codes/{code}", responses=responses(200, CouponResult, locked=True))
async def remove_coupon(number: OrderNumber, code: Code, request: Request):
    order = await authorize_access(request, number, body=await params(request))
    removing = services(request).cart.remove_coupon(number, code=code.strip().lower())
    return await _coupon(request, order, removing, "coupon_code_removed")
