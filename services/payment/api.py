"""The payment service's public interface: `PaymentService`, the operations on an order's
payments that the gateway (and the demo's loaders) call, with their answers.

The interface only: the implementation is services/payment/operations.py
(`PaymentOperations`), reached in-process or over HTTP through shared/rpc.py; both ways answer
JSON values (money as decimal strings) and refuse with a `shared.errors.DomainError`.
"""
from __future__ import annotations

from typing import Any, Protocol, TypedDict

from shared.steps import StepReply


class Ack(TypedDict):
    events: list[str]


class PaymentCreated(TypedDict):
    payment_id: int
    events: list[str]


class PaymentMethod(TypedDict):
    id: int
    name: str
    method_type: str  # "check" or "gateway"
    auto_capture: bool
    handle: str | None


class PaymentMethodsLoaded(TypedDict):
    payment_methods: int


class PaymentService(Protocol):
    async def create_payment(self, number: str, *, payment_method_id: Any = None, amount: Any = None,
                             source: Any = None, error_prefix: str = "", first: bool = False) -> PaymentCreated:
        """A new payment of the order. `first`: the caller's view shows the order with no payment
        (a hint that spares the payment service a read; wrong, it costs a retry, never a result)."""
        ...

    async def capture_payment(self, number: str, *, payment_id: int) -> Ack:
        """An admin's capture of a payment."""
        ...

    async def void_payment(self, number: str, *, payment_id: int) -> Ack:
        """An admin's void of a payment."""
        ...

    async def payment_methods(self) -> list[PaymentMethod]:
        """The methods a customer may choose (active and available to users)."""
        ...

    # -- reference data (demo data, imports): an admin operation, idempotent upserts --------
    async def load_payment_methods(self, *, methods: list[dict[str, Any]]) -> PaymentMethodsLoaded:
        """Upserts payment methods."""
        ...

    # -- the completion saga's step 3 (services/order/saga.py); the saga's id is the request id --
    async def process_payments(self, number: str, *, saga_id: str, amount: Any) -> StepReply:
        """Authorises (or purchases) the entered payments for `amount` (the locked total, a
        decimal string): `payment.PaymentsProcessed`, `PaymentsDeclined` or `PaymentsRefused`.
        Idempotent by `saga_id` (the gateway's ledger keeps one charge); after `void_payments`
        it does nothing."""
        ...

    async def void_payments(self, number: str, *, saga_id: str) -> StepReply:
        """Undoes `process_payments` (answered even when nothing was charged): `payment.PaymentsVoided`."""
        ...
