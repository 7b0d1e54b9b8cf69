"""The shipping service's internal HTTP API (called by the gateway)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from shared.db import upsert
from shared.jsonutil import json_response
from services.shipping import commands

router = APIRouter()



class SelectRate(BaseModel):
    rate_id: Any = None


class SelectMethod(BaseModel):
    shipping_method_id: Any = None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HTTPException(404, f"{what} not found")
    return value


@router.put("/orders/{number}/shipments/{shipment_number}/rate")
async def select_rate(number: str, shipment_number: str, body: SelectRate, request: Request):
    rate_id = body.rate_id if isinstance(body.rate_id, int) and not isinstance(body.rate_id, bool) else -1
    result = await commands.select_rate(request.app.state.pool, number, shipment_number, rate_id)
    return {"events": result.event_ids}


@router.put("/orders/{number}/shipments/{shipment_number}/method")
async def select_method(number: str, shipment_number: str, body: SelectMethod, request: Request):
    method_id = _int(body.shipping_method_id, "shipping method")
    result = await commands.select_method(request.app.state.pool, number, shipment_number, method_id)
    return {"events": result.event_ids}


@router.get("/shipments/{shipment_number}")
async def find_shipment(shipment_number: str, request: Request):
    """Which order a shipment belongs to (shipment numbers are global)."""
    pool = request.app.state.pool
    order_number = await pool.fetchval("SELECT order_number FROM shipment_index WHERE number = $1", shipment_number)
    if order_number is None:
        raise HTTPException(404, "shipment not found")
    shipments = await commands.SHIPMENTS.load(pool, order_number)
    shipment = next((s for s in shipments.shipments if s.number == shipment_number), None)
    if shipment is None:
        raise HTTPException(404, "shipment not found")
    return json_response({"order_number": order_number, "shipment": shipment.model_dump(mode="json")})


@router.get("/stock")
async def stock(request: Request, variant_id: list[int] = Query(default=[])):
    """Units on hand per variant across active locations (None: not stocked anywhere)."""
    rows = await request.app.state.pool.fetch(
        "SELECT i.variant_id, sum(i.count_on_hand) AS on_hand, bool_or(i.backorderable) AS backorderable"
        " FROM stock_items i JOIN stock_locations l ON l.id = i.stock_location_id"
        " WHERE l.active AND i.variant_id = ANY($1::int[]) GROUP BY i.variant_id", variant_id)
    return {str(r["variant_id"]): {"on_hand": r["on_hand"], "backorderable": r["backorderable"]} for r in rows}


@router.get("/rates")
async def estimate(request: Request, country_iso: str, currency: str = "USD"):
    """Every method that could ship to the country (Solidus's estimated_rates includes the
    ones not available to users), cheapest first."""
    methods = await commands.methods_for(request.app.state.pool, country_iso, currency, users_only=False)
    return json_response([{"shipping_method_id": m.id, "name": m.name, "code": m.code, "cost": m.cost,
                           "zone": m.zone} for m in methods])



class Zone(BaseModel):
    id: int
    name: str
    description: str = ""
    countries: list[str]


class StockItem(BaseModel):
    variant_id: int
    count_on_hand: int
    backorderable: bool = False


class Location(BaseModel):
    id: int
    name: str
    active: bool = True
    stock: list[StockItem] = []


class ShippingMethodIn(BaseModel):
    id: int
    name: str
    code: str
    cost: Decimal
    currency: str
    zone_ids: list[int]
    available_to_users: bool = True


class ShippingReference(BaseModel):
    zones: list[Zone] = []
    stock_locations: list[Location] = []
    shipping_methods: list[ShippingMethodIn] = []


@router.put("/admin/reference")
async def load_reference(body: ShippingReference, request: Request):
    """Upserts zones, stock locations (with stock) and shipping methods; idempotent."""
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        for zone in body.zones:
            await upsert(conn, "zones", zone.model_dump())
        for location in body.stock_locations:
            await upsert(conn, "stock_locations", location.model_dump(exclude={"stock"}))
            for item in location.stock:
                await upsert(conn, "stock_items", {**item.model_dump(), "stock_location_id": location.id},
                             key=("stock_location_id", "variant_id"))
        for method in body.shipping_methods:
            await upsert(conn, "shipping_methods", method.model_dump())
    return {"zones": len(body.zones), "stock_locations": len(body.stock_locations),
            "shipping_methods": len(body.shipping_methods)}
