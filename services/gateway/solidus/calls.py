"""A Solidus route's call to a service: through the command bus, a refusal rendered as
Solidus answers it."""
from __future__ import annotations

from typing import Any

from fastapi import Request

from services.gateway.reference import call
from services.gateway.solidus.access import is_admin
from services.gateway.solidus.errors import from_refusal
from shared.errors import DomainError


async def command(request: Request, service: str, operation: str, *, order: dict | None = None,
                  **arguments: Any) -> Any:
    """`service.operation(**arguments)`. `order`: the order as the caller was authorised with,
    to tell a placed order from a completing one when the owner refuses."""
    try:
        return await call(request, service, operation, **arguments)
    except DomainError as refusal:
        number = (order or {}).get("number") or arguments.get("number", "")
        raise from_refusal(refusal, number, placed=bool(order and order.get("completed_at")),
                           admin=is_admin(request)) from None
