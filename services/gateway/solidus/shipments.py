"""Solidus shipments: estimated rates and selecting a shipping method (with the order's own
token, which the documented flow asks storefronts to use), and rates chosen in the checkout."""
from __future__ import annotations

from typing import Any, Mapping

from fastapi import APIRouter, Request

from services.gateway.openapi import request_body
from services.gateway.paths import Code
from services.gateway.reference import fetch_order
from services.gateway.services import services
from services.gateway.solidus.access import authorize, authorize_access, is_admin
from services.gateway.solidus.calls import command
from services.gateway.solidus.errors import NOT_FOUND, UNAUTHORIZED, ApiError, missing_param
from services.gateway.solidus.render import display, money, render_shipment
from services.gateway.solidus.requests import ShippingMethodRequest, as_int, params, validated
from services.gateway.solidus.schemas import EstimatedRates, Shipment, responses
from shared.errors import DomainError
from shared.jsonutil import json_response

router = APIRouter()


async def select_rates(request: Request, order: dict, shipments: list[dict]) -> list[str]:
    events: list[str] = []
    by_id = {s["id"]: s for s in order.get("shipments", [])}
    for attrs in shipments:
        shipment = by_id.get(as_int(attrs.get("id")))
        if shipment is None:
            raise ApiError(404, NOT_FOUND)
        if attrs.get("selected_shipping_rate_id") is None:
            continue
        events += (await command(request, services(request).shipping.select_rate(
            order["number"], shipment_number=shipment["number"], rate_id=as_int(attrs["selected_shipping_rate_id"])),
            order=order))["events"]
    return events


async def shipment_and_order(request: Request, shipment_number: str, *,
                             access_only: bool = False) -> tuple[dict, Mapping[str, Any]]:
    """The shipment and its order (its view; with `access_only`, its access facts), if the
    caller may see them. An unknown shipment is refused like another order's (401) to all but
    an admin, so numbers cannot be probed for existence."""
    admin = is_admin(request)
    try:
        found = await services(request).shipping.find_shipment(shipment_number=shipment_number)
    except DomainError:
        raise (ApiError(404, NOT_FOUND) if admin else ApiError(401, UNAUTHORIZED)) from None
    # Unlike stock Solidus, the order's own token may use its shipments (the documented flow asks it to).
    if access_only:
        return found["shipment"], await authorize_access(request, found["order_number"])
    return found["shipment"], await authorize(request, found["order_number"])


@router.get("/shipments/{shipment_number}/estimated_rates", responses=responses(200, EstimatedRates))
async def estimated_rates(shipment_number: Code, request: Request):
    _, order = await shipment_and_order(request, shipment_number)
    ship_address = order.get("ship_address") or {}
    rates = await services(request).shipping.estimated_rates(country_iso=ship_address.get("country_iso", ""),
                                                             currency=order["currency"])
    return json_response({"shipping_rates": [
        {"name": r["name"], "cost": money(r["cost"]), "shipping_method_id": r["shipping_method_id"],
         "shipping_method_code": r["code"], "display_cost": display(r["cost"], order["currency"])} for r in rates]})


@router.put("/shipments/{shipment_number}/select_shipping_method", responses=responses(200, Shipment, locked=True),
            openapi_extra=request_body(ShippingMethodRequest))
async def select_shipping_method(shipment_number: Code, request: Request):
    body = validated(ShippingMethodRequest, await params(request))
    shipment, access = await shipment_and_order(request, shipment_number, access_only=True)
    method_id = as_int(body.get("shipping_method_id"))
    if method_id is None or method_id == "":
        raise missing_param("shipping_method_id")
    if not isinstance(method_id, int):
        raise ApiError(404, NOT_FOUND)
    result = await command(request, services(request).shipping.select_method(
        access["number"], shipment_number=shipment_number, shipping_method_id=method_id), access=access)
    order = await fetch_order(request, access["number"], result["events"])
    shipment = next(s for s in order["shipments"] if s["number"] == shipment_number)
    return json_response(render_shipment(shipment, order))
