"""A GetCandy route's call to a service: the awaitable of a typed call
(`services(request).cart.add_line_item(number, ...)`), a refusal rendered as GetCandy answers it."""
from __future__ import annotations

import hmac
from typing import Awaitable, Callable, Mapping, TypeVar

from fastapi import Request

from services.gateway.getcandy.errors import (
    ORDER_PLACED,
    GetCandyError,
    error,
    invalid,
    not_found,
    refused_while_locked,
)
from services.gateway.order_access import access_facts, placed_unsaid
from services.gateway.reference import VIEW_WAIT_MS, fetch_order
from services.gateway.services import services
from services.gateway.solidus.access import admin_key
from services.order.api import AccessFacts
from shared.errors import DomainError

T = TypeVar("T")


async def command(request: Request, call: Awaitable[T], *, order: dict | None = None,
                  access: Mapping | None = None, placed_message: str = ORDER_PLACED,
                  refused: Callable[[DomainError], GetCandyError] | None = None) -> T:
    """The answer of `call`; a placed order's refusal is 403 (`placed_message`), a completing
    one's 409, an unknown one's 404, and `refused` renders any other (default 422). Placed or
    completing: as `order` (the view the route read) says, or, for a route that read only the
    order's `access` facts, as the view read on that refusal says."""
    try:
        return await call
    except DomainError as refusal:
        if order is None and access is not None and placed_unsaid(refusal):
            order = await fetch_order(request, access["number"])
        locked = refused_while_locked(refusal, order, placed_message=placed_message)
        if locked is not None:
            raise locked from None
        if refused is not None:
            raise refused(refusal) from None
        if refusal.status == 404:
            raise not_found() from None
        raise error(422, refusal.message) from None


async def candy_order(request: Request, number: str, after: list[str] | None = None) -> dict | None:
    """The order, if GetCandy's routes reach it: one created through them (or before orders
    recorded their dialect); a Solidus order only for a caller with the admin key."""
    order = await fetch_order(request, number, after)
    if order is not None and order.get("dialect") == "solidus" and not holds_admin_key(request):
        return None
    return order


async def candy_access(request: Request, number: str) -> AccessFacts:
    """The order's access facts (kept by the gateway: services/gateway/order_access.py), if
    GetCandy's routes reach it (as `candy_order`); else 404."""
    facts = await access_facts(request, number)
    if facts is None or (facts["dialect"] == "solidus" and not holds_admin_key(request)):
        raise not_found()
    return facts


def holds_admin_key(request: Request) -> bool:
    """The admin API key in `Authorization: Bearer` (fails closed with none configured)."""
    auth, configured = request.headers.get("authorization", ""), admin_key()
    return bool(configured) and auth[:7].lower() == "bearer " and hmac.compare_digest(
        auth[7:].strip().encode(), configured.encode())


async def order_view(request: Request, number: str, after: list[str] | None = None) -> dict:
    order = await candy_order(request, number, after)
    if order is None:
        raise not_found()
    return order


async def advance(request: Request, number: str) -> dict:
    """One checkout step (GetCandy asks for an email only through `contact`, so none is required)."""
    result = await command(request, services(request).order.advance(number, require_email=False,
                                                                     view_wait_ms=VIEW_WAIT_MS),
                           refused=lambda refusal: invalid({"order": [refusal.message]}))
    order = result["order"]
    refusal = order.get("refusal") or {}
    if result.get("awaiting") and refusal.get("request_id") == result["awaiting"]:
        raise invalid({"price_id": [refusal["message"]]})
    return order


async def variants(request: Request, currency: str) -> dict[int, dict]:
    rows = await services(request).cart.list_variants(currency=currency)
    return {v["id"]: v for v in rows if v["price"] is not None}
