"""The payment service's operations: `PaymentOperations`, the implementation of
`PaymentService` (services/payment/api.py), built from the service's context in each process
that hosts it and called through shared/rpc.py (in-process, or `POST /bus/<operation>` alone)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, cast

from pydantic import BaseModel

from services.payment import commands
from services.payment.api import Ack, PaymentCreated, PaymentMethod, PaymentMethodsLoaded, PaymentService
from services.payment.context import PaymentContext
from services.payment.domain import OrderPayments
from shared.contracts.payment import PaymentsDeclined, PaymentsProcessed, PaymentsRefused, PaymentsVoided
from shared.db import Upsert, upsert_all
from shared.steps import StepReply, run_step


class PaymentOperations(PaymentService):
    def __init__(self, ctx: PaymentContext) -> None:
        self.ctx = ctx

    async def create_payment(self, number: str, *, payment_method_id: Any = None, amount: Any = None,
                             source: Any = None, error_prefix: str = "", first: bool = False) -> PaymentCreated:
        result = await commands.create_payment(self.ctx, number, payment_method_id=payment_method_id, amount=amount,
                                               source=source, error_prefix=error_prefix, first=first)
        created = result.events[-1].payload
        return {"payment_id": created["payment_id"], "events": result.event_ids}

    async def capture_payment(self, number: str, *, payment_id: int) -> Ack:
        result = await commands.capture(self.ctx, number, payment_id)
        return {"events": result.event_ids}

    async def void_payment(self, number: str, *, payment_id: int) -> Ack:
        result = await commands.void(self.ctx, number, payment_id)
        return {"events": result.event_ids}

    async def payment_methods(self) -> list[PaymentMethod]:
        async def load() -> tuple:  # reference data (shared/reference_cache.py)
            return tuple(await self.ctx.pool.fetch(
                "SELECT id, name, method_type, auto_capture, handle FROM payment_methods"
                " WHERE active AND available_to_users ORDER BY id"))

        rows = await self.ctx.reference.read(("method list",), ("payment_methods",), load)
        return [cast(PaymentMethod, dict(r)) for r in rows]

    async def load_payment_methods(self, *, methods: list[dict[str, Any]]) -> PaymentMethodsLoaded:
        await upsert_all(self.ctx.pool, (Upsert("payment_methods", method.model_dump())
                                         for method in map(PaymentMethodIn.model_validate, methods)))
        return {"payment_methods": len(methods)}

    async def process_payments(self, number: str, *, saga_id: str, amount: Any) -> StepReply:
        value = Decimal(str(amount))
        return await run_step(self.ctx.pool, self.ctx.store, OrderPayments.aggregate_type, number, saga_id,
                              (PaymentsProcessed, PaymentsDeclined, PaymentsRefused),
                              lambda conn: commands.process_payments(self.ctx, conn, number, saga_id, value),
                              one_statement=True)  # its one write is the append: no transaction across the gateway

    async def void_payments(self, number: str, *, saga_id: str) -> StepReply:
        return await run_step(self.ctx.pool, self.ctx.store, OrderPayments.aggregate_type, number, saga_id,
                              (PaymentsVoided,), lambda conn: commands.void_payments(self.ctx, conn, number, saga_id))


# -- reference data (demo data, imports): the loader's input, validated -----------------------
class PaymentMethodIn(BaseModel):
    id: int
    name: str
    method_type: str
    auto_capture: bool = False
    active: bool = True
    available_to_users: bool = True
    handle: str | None = None
