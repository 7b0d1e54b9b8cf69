"""Solidus payments: the new-payment form, creating one, and an admin's capture or void."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.gateway.openapi import request_body
from services.gateway.paths import Code, Id, OrderNumber
from services.gateway.reference import fetch_order, payment_methods
from services.gateway.services import services
from services.gateway.solidus.access import authorize, authorize_access, require_admin
from services.gateway.solidus.calls import command
from services.gateway.solidus.errors import NOT_FOUND, ApiError
from services.gateway.solidus.render import render_payment, render_payment_method
from services.gateway.solidus.requests import PaymentRequest, as_int, params, require, validated
from services.gateway.solidus.schemas import NewPayment, Payment, responses
from services.payment.api import PaymentCreated
from shared.jsonutil import json_response

router = APIRouter()


async def create_payment(request: Request, order: dict, attrs: dict, *, amount: Any,
                         error_prefix: str = "") -> PaymentCreated:
    return await command(request, services(request).payment.create_payment(
        order["number"], payment_method_id=as_int(attrs.get("payment_method_id")), amount=amount,
        source=attrs.get("source_attributes", attrs.get("source")), error_prefix=error_prefix,
        first=not order.get("payments")), order=order)


@router.get("/orders/{number}/payments/new", responses=responses(200, NewPayment))
async def new_payment(number: OrderNumber, request: Request):
    await authorize_access(request, number)
    methods = [render_payment_method(m) for m in await payment_methods(request)]
    return json_response({"attributes": ["id", "source_type", "source_id", "amount", "display_amount",
                                         "payment_method_id", "state", "avs_response", "created_at", "updated_at",
                                         "customer_metadata"], "payment_methods": methods})


@router.post("/orders/{number}/payments", status_code=201, responses=responses(201, Payment, locked=True),
             openapi_extra=request_body(PaymentRequest))
@router.post("/checkouts/{number}/payments", status_code=201, responses=responses(201, Payment, locked=True),
             openapi_extra=request_body(PaymentRequest))
async def post_payment(number: OrderNumber, request: Request):
    body = validated(PaymentRequest, await params(request))
    order = await authorize(request, number, body=body)
    attrs = require(body, "payment")
    result = await create_payment(request, order, attrs, amount=attrs.get("amount"))
    order = await fetch_order(request, number, result["events"])
    payment = next(p for p in order["payments"] if p["id"] == result["payment_id"])
    rendered = render_payment(payment, order["currency"])
    return json_response({k: v for k, v in rendered.items() if k not in ("payment_method", "source")}, 201)


@router.put("/orders/{number}/payments/{payment_id}/{action}", responses=responses(200, Payment))
async def payment_action(number: OrderNumber, payment_id: Id, action: Code, request: Request):
    """Admin `capture` or `void` of a payment; the order's payment state follows."""
    require_admin(request)
    if action not in ("capture", "void"):
        raise ApiError(404, NOT_FOUND)
    await authorize_access(request, number)
    payments = services(request).payment
    act = payments.capture_payment if action == "capture" else payments.void_payment
    result = await command(request, act(number, payment_id=payment_id), number=number)
    order = await fetch_order(request, number, result["events"])
    payment = next(p for p in order["payments"] if p["id"] == payment_id)
    return json_response(render_payment(payment, order["currency"]))
