"""A Solidus route's call to a service: the awaitable of a typed call
(`services(request).order.complete(number, ...)`), a refusal rendered as Solidus answers it."""
from __future__ import annotations

from typing import Awaitable, TypeVar

from fastapi import Request

from services.gateway.solidus.access import is_admin
from services.gateway.solidus.errors import from_refusal
from shared.errors import DomainError

T = TypeVar("T")


async def command(request: Request, call: Awaitable[T], *, order: dict | None = None, number: str = "") -> T:
    """The answer of `call`. `order`: the order as the caller was authorised with, to tell a
    placed order from a completing one when the owner refuses; `number`: the order's, when
    there is no `order`."""
    try:
        return await call
    except DomainError as refusal:
        number = (order or {}).get("number") or number
        raise from_refusal(refusal, number, placed=bool(order and order.get("completed_at")),
                           admin=is_admin(request)) from None
