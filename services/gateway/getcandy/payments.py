"""GetCandy payments (§4): the provider, payment types, and `process`, which runs the same
completion saga as Solidus's `complete`."""
from __future__ import annotations

from fastapi import APIRouter, Request

from services.gateway.availability import forget_stock_of
from services.gateway.getcandy.errors import (
    ALREADY_PROCESSED,
    GetCandyError,
    completion_refused,
    error,
    invalid,
    not_found,
    refused_while_locked,
)
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
from services.gateway.reference import COMPLETE_WAIT_MS, VIEW_WAIT_MS, payment_methods
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


def process_refused(refusal: DomainError) -> GetCandyError:
    """A refusal of the order service's `process`, rendered as GetCandy renders the step that
    refused (`details["stage"]`, services/order/api.py:ProcessStage)."""
    stage = refusal.details.get("stage")
    if stage == "payment_type" and refusal.status == 404:
        return not_found()
    if stage == "processable":
        if refusal.code == "order_placed":
            return error(422, ALREADY_PROCESSED)
        if refusal.code == "billing_missing":
            return error(403, refusal.message)
    if stage == "delivery":
        return invalid({"price_id": [refusal.message]})
    locked = refused_while_locked(refusal, None)
    if locked is not None:
        return locked
    if stage == "checkout":
        return invalid({"order": [refusal.message]})
    if refusal.code == "order_placed":
        return error(422, ALREADY_PROCESSED)
    return error(422, refusal.message or "The order could not be processed")


@router.post("/orders/process", responses=responses(200, CandyOrderEnvelope) | {202: {"model": CandyOrderEnvelope}},
             openapi_extra=request_body(ProcessRequest, form=False))
async def process(request: Request):
    """Validation and ids here; the rules, the steps, the payment and the completion are the
    order service's `process` (services/order/processing.py)."""
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
    method_id = handle = None
    if body.get("payment_type_id"):
        method_id = decode(MAIN, body["payment_type_id"])
        if method_id is None:
            raise not_found()
    elif isinstance(body.get("payment_type"), str) and body["payment_type"]:
        handle = body["payment_type"]
    token = body.get("payment_token")
    try:
        result = await services(request).order.process(
            order["number"], payment_method_id=method_id, payment_handle=handle,
            payment_token=token if isinstance(token, str) else None, view_wait_ms=COMPLETE_WAIT_MS,
            step_wait_ms=VIEW_WAIT_MS)
    except DomainError as refusal:
        raise process_refused(refusal) from None
    awaiting, order = result["awaiting"], result.get("order") or order
    forget_stock_of(request, order)
    if order.get("pending_request") == awaiting:
        return respond({"data": render_order(order, PLACED_INCLUDES)}, 202)
    refusal = order.get("refusal") or {}
    if refusal.get("request_id") == awaiting:
        raise completion_refused(refusal)
    return respond({"data": render_order(order, PLACED_INCLUDES)})
