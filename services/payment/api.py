"""The payment service's operations (its application interface), called through the
command bus: in-process when hosted with the gateway, `POST /bus/<operation>` when alone."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.payment import commands
from shared.aggregate import not_found
from shared.commandbus import ServiceApi, ServiceContext
from shared.db import Upsert, upsert_all

api = ServiceApi("payment")


@api.operation
async def create_payment(ctx: ServiceContext, number: str, *, payment_method_id: Any = None, amount: Any = None,
                         source: Any = None, error_prefix: str = "") -> dict:
    result = await commands.create_payment(ctx.pool, ctx.extras["gateway"], number,
                                           payment_method_id=payment_method_id, amount=amount, source=source,
                                           error_prefix=error_prefix)
    created = result.events[-1].payload
    return {"payment_id": created["payment_id"], "events": result.event_ids}


@api.operation
async def payment_action(ctx: ServiceContext, number: str, *, payment_id: int, action: str) -> dict:
    """An admin's capture or void of a payment."""
    if action not in ("capture", "void"):
        raise not_found("action")
    handler = commands.capture if action == "capture" else commands.void
    result = await handler(ctx.pool, ctx.extras["gateway"], number, payment_id)
    return {"events": result.event_ids}


@api.operation
async def payment_methods(ctx: ServiceContext) -> list[dict]:
    rows = await ctx.pool.fetch(
        "SELECT id, name, method_type, auto_capture, handle FROM payment_methods WHERE active AND available_to_users"
        " ORDER BY id")
    return [dict(r) for r in rows]


# -- reference data (demo data, imports): an admin operation, idempotent upserts ------------
class PaymentMethodIn(BaseModel):
    id: int
    name: str
    method_type: str
    auto_capture: bool = False
    active: bool = True
    available_to_users: bool = True
    handle: str | None = None


@api.operation
async def load_payment_methods(ctx: ServiceContext, *, methods: list[dict]) -> dict:
    await upsert_all(ctx.pool, (Upsert("payment_methods", method.model_dump())
                                for method in map(PaymentMethodIn.model_validate, methods)))
    return {"payment_methods": len(methods)}
