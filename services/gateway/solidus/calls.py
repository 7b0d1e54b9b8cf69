"""A Solidus route's call to a service: the awaitable of a typed call
(`services(request).order.complete(number, ...)`), a refusal rendered as Solidus answers it."""
from __future__ import annotations

from typing import Awaitable, Mapping, TypeVar

from fastapi import Request

from services.gateway.order_access import placed_unsaid
from services.gateway.reference import fetch_order
from services.gateway.solidus.access import is_admin
from services.gateway.solidus.errors import from_refusal
from shared.errors import DomainError

T = TypeVar("T")


async def command(request: Request, call: Awaitable[T], *, order: dict | None = None,
                  access: Mapping | None = None, number: str = "") -> T:
    """The answer of `call`. A refusal because the order is completing or placed is told
    apart by the order's `completed_at`: from `order`, the view the caller was authorised
    with; or, for a caller authorised with the order's `access` facts (which do not change,
    so say nothing of it), from the view read then, on that rare refusal only. `number`: the
    order's, when there is neither."""
    try:
        return await call
    except DomainError as refusal:
        number = (order or access or {}).get("number") or number
        if order is None and access is not None and placed_unsaid(refusal):
            order = await fetch_order(request, number)
        raise from_refusal(refusal, number, placed=bool(order and order.get("completed_at")),
                           admin=is_admin(request)) from None
