"""Solidus checkout steps: update the checkout, `next`, and `complete` (the completion saga).

Leaving `address` is answered by the shipping service, so `advance` waits (bounded) until
the order view shows the answer to its own request, and reports a refusal with Solidus's
error bodies.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

from fastapi import APIRouter, Request

from services.gateway.availability import forget_stock_of
from services.gateway.openapi import request_body
from services.gateway.paths import OrderNumber
from services.gateway.reference import COMPLETE_WAIT_MS, VIEW_WAIT_MS
from services.gateway.services import services
from services.gateway.solidus.access import authorize, guest_token_for_owner
from services.gateway.solidus.calls import command
from services.gateway.solidus.errors import (
    ApiError,
    completion_refused,
    could_not_transition,
    insufficient_stock,
    missing_param,
)
from services.gateway.solidus.payments import create_payment
from services.gateway.solidus.render import order_response
from services.gateway.solidus.requests import CheckoutRequest, StepRequest, collection, params, validated
from services.gateway.solidus.schemas import Order, responses
from services.gateway.solidus.shipments import select_rates
from services.order.api import OrderService

router = APIRouter()

DETAIL_KEYS = ("email", "use_billing", "bill_address", "bill_address_attributes", "ship_address",
               "ship_address_attributes")


def check_expected_total(body: dict, order: dict) -> None:
    expected = body.get("expected_total")
    if expected is None:
        return
    try:
        matches = Decimal(str(expected)[:32]) == Decimal(str(order["total"]))
    except InvalidOperation:
        matches = False
    if not matches:
        raise ApiError(400, {"errors": {"expected_total": ["Expected total does not match actual total."]}})


async def advance(request: Request, number: str, *, after: list[str] = (), guest_token: str | None = None,
                  order: dict | None = None) -> dict:
    """One `next`, once the view has the events in `after`; when it asks shipping for
    delivery, wait for the answer. With `guest_token`, the Order authorises the guest."""
    orders: OrderService = services(request).order
    result = await command(request, orders.advance(number, view_wait_ms=VIEW_WAIT_MS, after=list(after),
                                                   guest_token=guest_token), order=order, number=number)
    return stepped(result)


def stepped(result: dict) -> dict:
    """The order after a step, or the refusal of the delivery it awaited, as Solidus answers it."""
    awaiting, order = result.get("awaiting"), result["order"]
    refusal = order.get("refusal") or {}
    if awaiting and refusal.get("request_id") == awaiting:
        if refusal["code"] == "insufficient_stock":
            raise insufficient_stock()
        raise could_not_transition({"base": [refusal["message"]]})
    return order


async def step_caller(request: Request, number: str) -> tuple[str | None, dict | None]:
    """Who takes a step (`next`, `complete`): a guest, whose token the Order checks itself
    (no read first), or the owner or an admin, authorised here against the order (which
    is returned) and its `expected_total`. (guest token, None) or (None, order)."""
    body = validated(StepRequest, await params(request))
    guest_token = guest_token_for_owner(request, body)
    if guest_token is not None:
        return guest_token, None
    order = await authorize(request, number, body=body)
    check_expected_total(body, order)
    return None, order


@router.put("/checkouts/{number}/complete", openapi_extra=request_body(StepRequest),
            responses=responses(200, Order, locked=True) | {202: {"model": Order, "description": "Still completing"}})
async def complete(number: OrderNumber, request: Request):
    """Runs the completion saga and answers with its outcome; if the saga has not settled
    within GATEWAY_COMPLETE_WAIT_MS, 202 with the order still in progress."""
    guest_token, order = await step_caller(request, number)
    orders: OrderService = services(request).order
    result = await command(request, orders.complete(number, view_wait_ms=COMPLETE_WAIT_MS, guest_token=guest_token),
                           order=order, number=number)
    awaiting, order = result["awaiting"], result["order"]
    forget_stock_of(request, order)
    if order.get("pending_request") == awaiting:
        return await order_response(request, order, 202)
    refusal = order.get("refusal") or {}
    if refusal.get("request_id") == awaiting:
        raise completion_refused(refusal)
    return await order_response(request, order)


@router.put("/checkouts/{number}/next", openapi_extra=request_body(StepRequest),
            responses=responses(200, Order, locked=True))
async def next_step(number: OrderNumber, request: Request):
    guest_token, order = await step_caller(request, number)
    return await order_response(request, await advance(request, number, guest_token=guest_token, order=order))


@router.patch("/checkouts/{number}", openapi_extra=request_body(CheckoutRequest), responses=responses(200, Order,
                                                                                                      locked=True))
@router.put("/checkouts/{number}", openapi_extra=request_body(CheckoutRequest), responses=responses(200, Order,
                                                                                                    locked=True))
async def update_checkout(number: OrderNumber, request: Request):
    body = await params(request)
    validated(CheckoutRequest, {**body, "order": body["order"] if isinstance(body.get("order"), dict) else None})
    order = await authorize(request, number, body=body)
    state = order["state"]
    attributes = body.get("order")
    if state in ("delivery", "payment") and (not isinstance(attributes, dict) or not attributes):
        raise missing_param("order")
    attributes = attributes if isinstance(attributes, dict) else {}
    events: list[str] = []  # other services' events, which `next` must see in the view
    if state in ("cart", "address") and any(k in attributes for k in DETAIL_KEYS):
        # The details, then `next` on the view the update left (one call: the step reads nothing).
        return await order_response(request, stepped(await command(request, services(request).order.update_and_advance(
            number, email=attributes.get("email"),
            bill_address=attributes.get("bill_address_attributes", attributes.get("bill_address")),
            ship_address=attributes.get("ship_address_attributes", attributes.get("ship_address")),
            use_billing=attributes.get("use_billing") in (True, "true", "1", 1), view_wait_ms=VIEW_WAIT_MS),
            order=order, number=number)))
    if state == "delivery":
        events += await select_rates(request, order, collection(attributes.get("shipments_attributes")))
    elif state == "payment":
        for attrs in collection(attributes.get("payments_attributes"))[:1]:
            # Solidus overwrites the first payment's amount with the order total.
            events += (await create_payment(request, order, attrs, amount=str(order["total"]),
                                            error_prefix="payments."))["events"]
    return await order_response(request, await advance(request, number, after=events, order=order))
