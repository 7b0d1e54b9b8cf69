"""Solidus checkout steps: update checkout, next, shipments and rates, countries.

Leaving `address` is answered by the shipping service, so `advance` waits (bounded)
until the order view shows the answer to its own request, and reports a refusal with
Solidus's error bodies.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Request

from services.gateway.paths import Code, Hash, Id, OrderNumber  # noqa: F401

from shared.jsonutil import json_response
from services.gateway.solidus import (
    COMPLETE_WAIT_MS, NOT_FOUND, UNAUTHORIZED, ApiError, as_int, authorize, command, could_not_transition,
    display, fetch_order, guest_headers, insufficient_stock, invalid_resource, is_admin, missing_param, money, order_response,
    params, payment_methods, render_payment, render_payment_method, render_shipment, require, with_view,
)

router = APIRouter(prefix="/api")

DETAIL_KEYS = ("email", "use_billing", "bill_address", "bill_address_attributes", "ship_address",
               "ship_address_attributes")


def check_expected_total(body: dict, order: dict) -> None:
    expected = body.get("expected_total")
    if expected is None:
        return
    try:
        matches = Decimal(str(expected)) == Decimal(str(order["total"]))
    except InvalidOperation:
        matches = False
    if not matches:
        raise ApiError(400, {"errors": {"expected_total": ["Expected total does not match actual total."]}})


def collection(value: Any) -> list[dict]:
    """Nested attributes arrive as arrays or as Rails index hashes ({"0": {...}})."""
    if isinstance(value, list):
        items = value
    elif isinstance(value, dict):
        items = [value[k] for k in sorted(value, key=lambda k: (len(str(k)), str(k)))]
    else:
        return []
    return [item for item in items if isinstance(item, dict)]


async def advance(request: Request, number: str, *, after: list[str] = (),
                  guest: dict[str, str] | None = None, order: dict | None = None) -> dict:
    """One `next`, once the view has the events in `after`; when it asks shipping for
    delivery, wait for the answer. With `guest` headers, the order service authorises it."""
    result = await command(request, "order", "PUT", f"/orders/{number}/next",
                           params=with_view() | ({"after": ",".join(after)} if after else {}), headers=guest,
                           order=order)
    awaiting, order = result.get("awaiting"), result["order"]
    refusal = order.get("refusal") or {}
    if awaiting and refusal.get("request_id") == awaiting:
        if refusal["code"] == "insufficient_stock":
            raise insufficient_stock()
        raise could_not_transition({"base": [refusal["message"]]})
    return order


def completion_refused(refusal: dict) -> ApiError:
    """The completion saga's failure (services/order/saga.py) as Solidus answers it."""
    match refusal["code"]:
        case "insufficient_stock":
            return insufficient_stock()
        case "promotions_ineligible" | "cart_changed":
            # The checkout restarted at `address`, as Solidus's complete does when promotions change.
            return could_not_transition({"base": [refusal["message"]]})
        case _:
            return invalid_resource({"base": [refusal["message"]]})


@router.put("/checkouts/{number}/complete")
async def complete(number: OrderNumber, request: Request):
    """Runs the completion saga and answers with its outcome; if the saga has not settled
    within GATEWAY_COMPLETE_WAIT_MS, 202 with the order still in progress."""
    body = await params(request)
    guest = guest_headers(request, body)
    order = None
    if guest is None:
        order = await authorize(request, number, update=True, body=body)
        check_expected_total(body, order)
    result = await command(request, "order", "PUT", f"/orders/{number}/complete", params=with_view(COMPLETE_WAIT_MS),
                           headers=guest, order=order)
    awaiting, order = result["awaiting"], result["order"]
    if order.get("pending_request") == awaiting:
        return await order_response(request, order, 202)
    refusal = order.get("refusal") or {}
    if refusal.get("request_id") == awaiting:
        raise completion_refused(refusal)
    return await order_response(request, order)


@router.put("/checkouts/{number}/next")
async def next_step(number: OrderNumber, request: Request):
    body = await params(request)
    guest = guest_headers(request, body)
    order = None
    if guest is None:
        order = await authorize(request, number, update=True, body=body)
        check_expected_total(body, order)
    return await order_response(request, await advance(request, number, guest=guest, order=order))


@router.api_route("/checkouts/{number}", methods=["PATCH", "PUT"])
async def update_checkout(number: OrderNumber, request: Request):
    body = await params(request)
    order = await authorize(request, number, update=True, body=body)
    state = order["state"]
    attributes = body.get("order")
    if state in ("delivery", "payment") and (not isinstance(attributes, dict) or not attributes):
        raise missing_param("order")
    attributes = attributes if isinstance(attributes, dict) else {}
    events: list[str] = []  # other services' events, which `next` must see in the view
    if state in ("cart", "address") and any(k in attributes for k in DETAIL_KEYS):
        # The order's own events are in the view when the command returns: nothing to wait for.
        await command(request, "order", "PATCH", f"/orders/{number}/details", json_body={
            "email": attributes.get("email"),
            "bill_address": attributes.get("bill_address_attributes", attributes.get("bill_address")),
            "ship_address": attributes.get("ship_address_attributes", attributes.get("ship_address")),
            "use_billing": attributes.get("use_billing") in (True, "true", "1", 1),
        }, order=order)
    elif state == "delivery":
        events += await select_rates(request, order, collection(attributes.get("shipments_attributes")))
    elif state == "payment":
        for attrs in collection(attributes.get("payments_attributes"))[:1]:
            # Solidus overwrites the first payment's amount with the order total.
            events += (await create_payment(request, order, attrs, amount=order["total"],
                                            error_prefix="payments."))["events"]
    return await order_response(request, await advance(request, number, after=events, order=order))


async def create_payment(request: Request, order: dict, attrs: dict, *, amount: Any, error_prefix: str = "") -> dict:
    source = attrs.get("source_attributes", attrs.get("source"))
    return await command(request, "payment", "POST", f"/orders/{order['number']}/payments", json_body={
        "payment_method_id": as_int(attrs.get("payment_method_id")), "amount": amount, "source": source,
        "error_prefix": error_prefix}, order=order)


@router.get("/orders/{number}/payments/new")
async def new_payment(number: OrderNumber, request: Request):
    await authorize(request, number, update=False)
    methods = [render_payment_method(m) for m in await payment_methods(request)]
    return json_response({"attributes": ["id", "source_type", "source_id", "amount", "display_amount",
                                         "payment_method_id", "state", "avs_response", "created_at", "updated_at",
                                         "customer_metadata"], "payment_methods": methods})


@router.post("/orders/{number}/payments", status_code=201)
@router.post("/checkouts/{number}/payments", status_code=201)
async def post_payment(number: OrderNumber, request: Request):
    body = await params(request)
    order = await authorize(request, number, update=False, body=body)
    attrs = require(body, "payment")
    result = await create_payment(request, order, attrs, amount=attrs.get("amount"))
    order = await fetch_order(request, number, result["events"])
    payment = next(p for p in order["payments"] if p["id"] == result["payment_id"])
    rendered = render_payment(payment, order["currency"])
    return json_response({k: v for k, v in rendered.items() if k not in ("payment_method", "source")}, 201)


async def select_rates(request: Request, order: dict, shipments: list[dict]) -> list[str]:
    events: list[str] = []
    by_id = {s["id"]: s for s in order.get("shipments", [])}
    for attrs in shipments:
        shipment = by_id.get(as_int(attrs.get("id")))
        if shipment is None:
            raise ApiError(404, NOT_FOUND)
        if attrs.get("selected_shipping_rate_id") is None:
            continue
        rate_id = as_int(attrs["selected_shipping_rate_id"])
        events += (await command(request, "shipping", "PUT",
                                 f"/orders/{order['number']}/shipments/{shipment['number']}/rate",
                                 json_body={"rate_id": rate_id}, order=order))["events"]
    return events


async def shipment_and_order(request: Request, shipment_number: str) -> tuple[dict, dict]:
    response = await request.app.state.services.call("shipping", "GET", f"/shipments/{shipment_number}")
    if response.status_code != 200:
        raise ApiError(404, NOT_FOUND)
    found = response.json()
    # Unlike stock Solidus, the order's own token may use its shipments (the documented flow asks it to).
    order = await authorize(request, found["order_number"], update=True)
    return found["shipment"], order


@router.get("/shipments/{shipment_number}/estimated_rates")
async def estimated_rates(shipment_number: OrderNumber, request: Request):
    _, order = await shipment_and_order(request, shipment_number)
    ship_address = order.get("ship_address") or {}
    rates = (await request.app.state.services.call(
        "shipping", "GET", "/rates", params={"country_iso": ship_address.get("country_iso", ""),
                                             "currency": order["currency"]})).json()
    return json_response({"shipping_rates": [
        {"name": r["name"], "cost": money(r["cost"]), "shipping_method_id": r["shipping_method_id"],
         "shipping_method_code": r["code"], "display_cost": display(r["cost"], order["currency"])} for r in rates]})


@router.put("/shipments/{shipment_number}/select_shipping_method")
async def select_shipping_method(shipment_number: OrderNumber, request: Request):
    body = await params(request)
    shipment, order = await shipment_and_order(request, shipment_number)
    method_id = as_int(body.get("shipping_method_id"))
    if method_id is None or method_id == "":
        raise missing_param("shipping_method_id")
    if not isinstance(method_id, int):
        raise ApiError(404, NOT_FOUND)
    result = await command(request, "shipping", "PUT",
                           f"/orders/{order['number']}/shipments/{shipment_number}/method",
                           json_body={"shipping_method_id": method_id}, order=order)
    order = await fetch_order(request, order["number"], result["events"])
    shipment = next(s for s in order["shipments"] if s["number"] == shipment_number)
    return json_response(render_shipment(shipment, order))


@router.get("/countries")
async def countries(request: Request):
    rows = (await request.app.state.services.call("order", "GET", "/countries")).json()
    items = [{k: c[k] for k in ("id", "iso_name", "iso", "iso3", "name", "numcode", "states_required")}
             | {"states": [{"id": s["id"], "name": s["name"], "abbr": s["abbr"], "country_id": c["id"]}
                           for s in c["states"]]} for c in rows]
    return json_response({"countries": items, "count": len(items), "current_page": 1, "pages": 1})


# -- admin: payment actions and cancel ------------------------------------------
def require_admin(request: Request) -> None:
    if not is_admin(request):
        raise ApiError(401, UNAUTHORIZED)


@router.put("/orders/{number}/payments/{payment_id}/{action}")
async def payment_action(number: OrderNumber, payment_id: Id, action: Code, request: Request):
    """Admin `capture` or `void` of a payment; the order's payment state follows."""
    require_admin(request)
    if action not in ("capture", "void"):
        raise ApiError(404, NOT_FOUND)
    await authorize(request, number, update=False)
    result = await command(request, "payment", "PUT", f"/orders/{number}/payments/{payment_id}/{action}")
    order = await fetch_order(request, number, result["events"])
    payment = next(p for p in order["payments"] if p["id"] == payment_id)
    return json_response(render_payment(payment, order["currency"]))


@router.put("/orders/{number}/cancel")
async def cancel(number: OrderNumber, request: Request):
    """Admin: cancel a completed order; stock is restocked and payments voided or refunded
    by the shipping and payment services reacting to order.OrderCanceled."""
    require_admin(request)
    await authorize(request, number, update=False)
    result = await command(request, "order", "PUT", f"/orders/{number}/cancel", params=with_view())
    return await order_response(request, result["order"])
