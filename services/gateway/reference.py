"""The gateway's reads of the services that every dialect shares: the order view (with
read-your-writes), and the reference data rendered into every order (countries, payment
methods), cached briefly per process so an admin change shows within GATEWAY_REFERENCE_TTL_S.
The services themselves are services/gateway/services.py's typed interfaces."""
from __future__ import annotations

import os
import time
from typing import Any, Awaitable, Callable

from fastapi import Request

from services.gateway.order_access import remember
from services.gateway.services import services
from shared.errors import DomainError

REFERENCE_TTL_S = float(os.environ.get("GATEWAY_REFERENCE_TTL_S", "30"))
VIEW_WAIT_MS = int(os.environ.get("GATEWAY_VIEW_WAIT_MS", "3000"))
COMPLETE_WAIT_MS = int(os.environ.get("GATEWAY_COMPLETE_WAIT_MS", "10000"))


async def cached(request: Request, name: str, load: Callable[[], Awaitable[Any]]) -> Any:
    cache = request.app.state.__dict__.setdefault("reference", {})
    loaded_at, value = cache.get(name, (0.0, None))
    if value is None or time.monotonic() - loaded_at > REFERENCE_TTL_S:
        value = await load()
        cache[name] = (time.monotonic(), value)
    return value


async def countries_by_id(request: Request) -> dict[int, dict]:
    return {c["id"]: c for c in await cached(request, "country list", services(request).order.countries)}


async def payment_methods(request: Request) -> list[dict]:
    return await cached(request, "payment method list", services(request).payment.payment_methods)


async def fetch_order(request: Request, number: str, after: list[str] | None = None) -> dict | None:
    """The order view, once it has applied the events in `after` (bounded wait); None if
    there is no such order. Its access facts are kept for the routes that only authorise."""
    try:
        found = await services(request).order.get_order(number, after=list(after or ()), timeout_ms=VIEW_WAIT_MS)
    except DomainError as refusal:
        if refusal.status == 404:
            return None
        raise
    remember(request, found["order"])
    return found["order"]


async def await_view(request: Request, number: str, events: list[str]) -> None:
    """Read-your-writes for a caller that does not need the order itself: return once the
    order view has applied `events` (or the bounded wait ran out)."""
    if events:
        await services(request).order.wait_applied(number, after=events, timeout_ms=VIEW_WAIT_MS)
