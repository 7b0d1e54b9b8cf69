"""Solidus line items: add (or add to), set a quantity, remove."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.gateway.availability import availability
from services.gateway.openapi import request_body
from services.gateway.paths import Id, OrderNumber
from services.gateway.reference import await_view
from services.gateway.services import services
from services.gateway.solidus.access import authorize_access
from services.gateway.solidus.calls import command
from services.gateway.solidus.render import render_line_item
from services.gateway.solidus.requests import LineItemRequest, as_int, params, require, validated
from services.gateway.solidus.schemas import LineItem, responses
from services.order.api import AccessFacts
from shared.jsonutil import json_response

router = APIRouter()


async def line_item_response(request: Request, line: dict, order: AccessFacts) -> dict:
    available = await availability(request, [line["variant_id"]])
    return render_line_item(line, order["currency"], available[line["variant_id"]])


@router.post("/checkouts/{number}/line_items", status_code=201, responses=responses(201, LineItem, locked=True),
             openapi_extra=request_body(LineItemRequest))
@router.post("/orders/{number}/line_items", status_code=201, responses=responses(201, LineItem, locked=True),
             openapi_extra=request_body(LineItemRequest))
async def add_line_item(number: OrderNumber, request: Request) -> Response:
    body = validated(LineItemRequest, await params(request))
    order = await authorize_access(request, number, body=body)
    line_item = require(body, "line_item")
    result = await command(request, services(request).cart.add_line_item(
        number, variant_id=as_int(line_item.get("variant_id")), quantity=as_int(line_item.get("quantity", 1)),
        currency=order["currency"]), access=order)
    await await_view(request, number, result["events"])
    return json_response(await line_item_response(request, result["line_item"], order), status_code=201)


@router.patch("/checkouts/{number}/line_items/{line_id}",
               responses=responses(200, LineItem, locked=True) | {204: {"description": "The line was removed"}},
               openapi_extra=request_body(LineItemRequest))
@router.put("/checkouts/{number}/line_items/{line_id}",
             responses=responses(200, LineItem, locked=True) | {204: {"description": "The line was removed"}},
             openapi_extra=request_body(LineItemRequest))
async def update_line_item(number: OrderNumber, line_id: Id, request: Request):
    body = validated(LineItemRequest, await params(request))
    order = await authorize_access(request, number, body=body)
    line_item = require(body, "line_item")
    result = await command(request, services(request).cart.set_line_quantity(
        number, line_id=line_id, quantity=as_int(line_item.get("quantity"))), access=order)
    await await_view(request, number, result["events"])
    if result["line_item"] is None:  # quantity 0 removed the line
        return Response(status_code=204)
    return json_response(await line_item_response(request, result["line_item"], order))


@router.delete("/checkouts/{number}/line_items/{line_id}", status_code=204, responses=responses(204, locked=True))
async def delete_line_item(number: OrderNumber, line_id: Id, request: Request):
    order = await authorize_access(request, number, body=await params(request))
    result = await command(request, services(request).cart.remove_line_item(number, line_id=line_id), access=order)
    await await_view(request, number, result["events"])
    return Response(status_code=204)
