"""The Solidus-style checkout API (`/api/...`): routes, auth and JSON shapes of solidus_api."""
from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(prefix="/api")

NOT_FOUND = {"error": "The resource you were looking for could not be found."}
UNAUTHORIZED = {"error": "You are not authorized to perform that action."}


def admin_key() -> str:
    return os.environ.get("TILLSTREAM_ADMIN_KEY", "")


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("token")


def _order_token(request: Request) -> str | None:
    return request.headers.get("x-spree-order-token") or request.query_params.get("order_token")


def is_admin(request: Request) -> bool:
    key = _bearer(request)
    if key is None:
        return False
    if key != admin_key():
        raise ApiError(401, {"error": f"Invalid API key ({key}) specified."})
    return True


async def load_order(request: Request, number: str) -> dict:
    """The order, if the caller may see it (admin key, or the order's own token)."""
    admin = is_admin(request)
    token = _order_token(request)
    response = await request.app.state.services.call("order", "GET", f"/orders/{number}")
    order = response.json() if response.status_code == 200 else None
    if admin:
        if order is None:
            raise ApiError(404, NOT_FOUND)
        return order
    # A token for an unknown order is refused like a wrong token, as Solidus does.
    if order is None or token is None or token != order["guest_token"]:
        raise ApiError(401, UNAUTHORIZED)
    return order


def money(value: Any) -> str:
    from decimal import Decimal

    text = format(Decimal(str(value)).normalize(), "f")
    return text if "." in text else text + ".0"


def render_order(order: dict) -> dict:
    total = money(order.get("total", "0"))
    steps = ["address", "delivery", "payment", "confirm", "complete"]
    if total == "0.0":
        steps.remove("payment")
    return {
        "id": order["number"], "number": order["number"], "state": order["state"],
        "email": order.get("email"), "user_id": order.get("user_id"), "currency": order["currency"],
        "item_total": money(order.get("item_total", "0")), "ship_total": money(order.get("ship_total", "0")),
        "adjustment_total": money(order.get("adjustment_total", "0")), "total": total,
        "payment_total": money(order.get("payment_total", "0")), "total_quantity": order.get("total_quantity", 0),
        "created_at": order["created_at"], "updated_at": order["updated_at"],
        "completed_at": order.get("completed_at"), "payment_state": order.get("payment_state"),
        "shipment_state": order.get("shipment_state"), "token": order["guest_token"],
        "checkout_steps": steps, "line_items": order.get("line_items", []),
        "payments": order.get("payments", []), "shipments": order.get("shipments", []),
        "adjustments": order.get("adjustments", []), "bill_address": order.get("bill_address"),
        "ship_address": order.get("ship_address"), "permissions": {"can_update": False},
    }


@router.post("/orders", status_code=201)
async def create_order(request: Request):
    admin = is_admin(request)
    services = request.app.state.services
    created = (await services.call("order", "POST", "/orders", json={})).json()
    response = await services.call("order", "GET", f"/orders/{created['number']}")
    order = response.json()
    body = render_order(order)
    if not admin:
        body["permissions"] = {"can_update": False}
    return JSONResponse(body, status_code=201)


@router.get("/orders/{number}")
async def show_order(number: str, request: Request):
    return render_order(await load_order(request, number))
