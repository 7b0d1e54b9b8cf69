"""GetCandy payments (§4): the provider, payment types, and `process`, which runs the same
completion saga as Solidus's `complete`."""
from __future__ import annotations

from fastapi import APIRouter, Request

from services.gateway.availability import forget_stock_of
from services.gateway.getcandy.calls import advance, command
from services.gateway.getcandy.errors import ALREADY_PROCESSED, completion_refused, error, invalid, not_found
from services.gateway.getcandy.ids import MAIN, decode
from services.gateway.getcandy.orders import find_order
from services.gateway.getcandy.render import render_order, respond
from services.gateway.getcandy.requests import body_of
from services.gateway.getcandy.schemas import (
    CandyList,
    CandyObject,
    CandyOrderEnvelope,
    ProcessRequest,
    responses,
    validated,
)
from services.gateway.openapi import request_body
from services.gateway.reference import COMPLETE_WAIT_MS, await_view, payment_methods
from services.gateway.services import services
from shared.errors import DomainError

router = APIRouter()
PLACED_INCLUDES = {"lines", "shipping", "discounts"}


async def payment_types(request: Request) -> list[dict]:
    methods = await payment_methods(request)  # reference data, cached briefly
    return [m for m in methods if m["method_type"] == "gateway" and m.get("handle")]


@router.get("/payments/provider", responses=responses(200, CandyObject))
async def provider(request: Request):
    return respond({"data": {"name": "Offline", "client_token": "OFFLINE"}})


@router.get("/payments/types", responses=responses(200, CandyList))
async def types(request: Request):
    return respond({"data": [{"id": MAIN.encode(m["id"]), "name": m["name"], "handle": m["handle"],
                              "driver": "bogus", "success_status": "payment-received"}
                             for m in await payment_types(request)]})


def processed_already(refusal: DomainError) -> Exception:
    if refusal.code == "order_placed":
        return error(422, ALREADY_PROCESSED)
    return error(422, refusal.message or "The order could not be processed")


@router.post("/orders/process", responses=responses(200, CandyOrderEnvelope) | {202: {"model": CandyOrderEnvelope}},
             openapi_extra=request_body(ProcessRequest, form=False))
async def process(request: Request):
    body = validated(ProcessRequest, await body_of(request))
    errors: dict[str, list[str]] = {}
    if not body.get("order_id"):
        errors["order_id"] = ["The order id field is required."]
    if not body.get("payment_token") and not body.get("payment_type_id"):
        errors["payment_token"] = ["The payment token field is required when payment type id is not present."]
        errors["payment_type_id"] = ["The payment type id field is required when payment token is not present."]
    if errors:
        raise invalid(errors)
    order = await find_order(request, body["order_id"])
    number = order["number"]
    method = None
    if body.get("payment_type_id"):
        method_id = decode(MAIN, body["payment_type_id"])
        method = next((m for m in await payment_types(request) if m["id"] == method_id), None)
        if method is None:
            raise not_found()
    elif body.get("payment_type"):
        method = next((m for m in await payment_types(request) if m["handle"] == body["payment_type"]), None)
    if order.get("completed_at"):
        raise error(422, ALREADY_PROCESSED)
    billing = order.get("bill_address") or {}
    if not all(billing.get(k) for k in ("firstname", "lastname", "address1", "city", "zipcode", "country_iso")):
        raise error(403, "The order is missing billing information")
    while order["state"] in ("cart", "address", "delivery"):
        order = await advance(request, number)
    if order["state"] == "payment":
        if method is None:  # the Offline driver: always valid, nothing to charge now
            offline = next(m for m in await payment_methods(request) if m["method_type"] == "check")
            payment = {"payment_method_id": offline["id"], "amount": str(order["total"])}
        else:
            token = body.get("payment_token")
            payment = {"payment_method_id": method["id"], "amount": str(order["total"]),
                       "source": {"payment_token": token if isinstance(token, str) else None}}
        result = await command(request, services(request).payment.create_payment(number, **payment),
                               refused=processed_already)
        await await_view(request, number, result["events"])
        order = await advance(request, number)
    result = await command(request, services(request).order.complete(number, view_wait_ms=COMPLETE_WAIT_MS),
                           order=order, refused=processed_already)
    awaiting, order = result["awaiting"], result["order"]
    forget_stock_of(request, order)
    if order.get("pending_request") == awaiting:
        return respond({"data": render_order(order, PLACED_INCLUDES)}, 202)
    refusal = order.get("refusal") or {}
    if refusal.get("request_id") == awaiting:
        raise completion_refused(refusal)
    return respond({"data": render_order(order, PLACED_INCLUDES)})
