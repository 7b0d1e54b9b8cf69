"""GetCandy's `process` as one operation of the order service (`OrderService.process`): the
Order's guards (Order.check_processable), the checkout steps through the order's own `advance`,
the payment through the payment service (the offline method unless a gateway method is
chosen), then the completion saga, as Solidus's `complete` starts it.

A refusal is the refusing step's own `DomainError` with `details["stage"]` (api.ProcessStage)
saying which step refused, so the gateway renders each as GetCandy did when it ran the steps
itself."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from services.order import commands
from services.order.api import Outcome, ProcessStage
from services.order.domain import CheckoutRefused
from services.order.view import read_order
from shared.aggregate import DomainError, not_found

if TYPE_CHECKING:
    from services.order.operations import OrderOperations
    from services.payment.api import PaymentMethod, PaymentService

BEFORE_PAYMENT = ("cart", "address", "delivery")  # the steps `process` takes itself
OFFLINE = "check"  # GetCandy's Offline driver: the payment method of this type, nothing to charge now


class stage:
    """Tags a refusal raised inside the block with the step that refused it."""

    def __init__(self, name: ProcessStage) -> None:
        self.name = name

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, refusal: Any, traceback: Any) -> bool:
        if isinstance(refusal, DomainError):
            refusal.details.setdefault("stage", self.name)
        return False


async def process(orders: OrderOperations, payment: PaymentService, number: str, *,
                  payment_method_id: int | None, payment_handle: str | None, payment_token: str | None,
                  view_wait_ms: int | None, step_wait_ms: int) -> Outcome:
    pool = orders.ctx.pool
    method = None
    if payment_method_id is not None or payment_handle is not None:
        with stage("payment_type"):
            method = chosen_method(await payment.payment_methods(), payment_method_id, payment_handle)
    with stage("processable"):
        state = (await commands.check_processable(orders.ctx, number)).state
    view = None
    awaited = None
    while state in BEFORE_PAYMENT:
        with stage("checkout"):
            advanced = await orders.advance(number, require_email=False, view_wait_ms=step_wait_ms)
        view = advanced.get("order") or {}
        refusal = view.get("refusal") or {}
        if advanced["awaiting"] and refusal.get("request_id") == advanced["awaiting"]:
            raise DomainError(refusal.get("code") or "delivery_refused", refusal.get("message") or "",
                              stage="delivery")
        if advanced["awaiting"] and advanced["awaiting"] == awaited and view.get("state") == state:
            # Asked twice, still unanswered (shipping unreachable, and its consumer behind):
            # refused as a step on a pending delivery was, rather than asking for ever.
            with stage("checkout"):
                raise CheckoutRefused({})
        awaited, state = advanced["awaiting"], view.get("state")
    if state == "payment":
        view = view if view is not None else await read_order(pool, number)
        if view is None:
            raise not_found("order")
        source = None if method is None else {"payment_token": payment_token}
        if method is None:
            with stage("payment"):
                method = next(m for m in await payment.payment_methods() if m["method_type"] == OFFLINE)
        with stage("payment"):
            created = await payment.create_payment(number, payment_method_id=method["id"], amount=str(view["total"]),
                                                   source=source, first=not view.get("payments"))
        with stage("checkout"):  # once the view has the payment (read-your-writes)
            await orders.advance(number, require_email=False, view_wait_ms=step_wait_ms, after=created["events"])
    with stage("completion"):
        return await orders.complete(number, view_wait_ms=view_wait_ms)


def chosen_method(methods: list[PaymentMethod], method_id: int | None, handle: str | None) -> PaymentMethod | None:
    """The gateway method the customer chose (GetCandy's payment types: with a handle), by id
    (none such: not found) or else by handle (none such: the offline method)."""
    types = [m for m in methods if m["method_type"] == "gateway" and m.get("handle")]
    if method_id is not None:
        method = next((m for m in types if m["id"] == method_id), None)
        if method is None:
            raise not_found("payment method")
        return method
    return next((m for m in types if m["handle"] == handle), None)

