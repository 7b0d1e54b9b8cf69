"""The payment service's internal HTTP API (called by the gateway)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from shared.db import upsert

from services.payment import commands

router = APIRouter()


class CreatePayment(BaseModel):
    payment_method_id: Any = None
    amount: Any = None
    source: Any = None
    error_prefix: str = ""


@router.post("/orders/{number}/payments", status_code=201)
async def create_payment(number: str, body: CreatePayment, request: Request):
    from services.payment.consumers import gateway

    result = await commands.create_payment(request.app.state.pool, gateway(), number,
                                           payment_method_id=body.payment_method_id,
                                           amount=body.amount, source=body.source, error_prefix=body.error_prefix)
    created = result.events[-1].payload
    return {"payment_id": created["payment_id"], "events": result.event_ids}


@router.put("/orders/{number}/payments/{payment_id}/{action}")
async def payment_action(number: str, payment_id: int, action: str, request: Request):
    from services.payment.consumers import gateway

    if action not in ("capture", "void"):
        raise HTTPException(404, "unknown action")
    handler = commands.capture if action == "capture" else commands.void
    result = await handler(request.app.state.pool, gateway(), number, payment_id)
    return {"events": result.event_ids}


@router.get("/payment_methods")
async def payment_methods(request: Request):
    rows = await request.app.state.pool.fetch(
        "SELECT id, name, method_type, auto_capture, handle FROM payment_methods WHERE active AND available_to_users"
        " ORDER BY id")
    return [dict(r) for r in rows]


class PaymentMethodIn(BaseModel):
    id: int
    name: str
    method_type: str
    auto_capture: bool = False
    active: bool = True
    available_to_users: bool = True
    handle: str | None = None


@router.put("/admin/payment_methods")
async def load_payment_methods(methods: list[PaymentMethodIn], request: Request):
    async with request.app.state.pool.acquire() as conn, conn.transaction():
        for m in methods:
            await upsert(conn, "payment_methods", m.model_dump())
    return {"payment_methods": len(methods)}

