"""The completion saga: what Solidus's `complete` and GetCandy's `process` run.

Read top to bottom; this is the only place its steps are listed. `shared/saga_runner.py` runs
it: each participant's step is a call of its operation through its interface (`CartService.
lock_cart`, ...), whose reply holds the participant's answer event (also published on its
topic), with a deadline; a failure undoes every step taken, the failing one included, and
leaves the order where `Failure.state` says. The diagram in the README is `COMPLETION.mermaid()`.

1. cart: lock the cart. Its lines, prices, adjustments and totals are then what is charged
   and shipped, and its limited coupons are reserved; refused if its coupons lapsed or it
   holds discarded variants. Undo: unlock, freeing the coupons.
2. shipping: allocate stock for exactly the locked lines, from where the shipments were
   planned, backordering what is short where that is allowed; the selected rates are fixed.
   Undo: put the units back.
3. payment (when there is something to pay): authorise (or purchase) the entered payments
   for the locked total, refused if they no longer add up to it. Undo: void them.
4. order: complete, the pivot. The coupons' reservations become their use for good.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from services.cart.api import CartService
from services.order.domain import Order
from services.order.view import order_taxes
from services.payment.api import PaymentService
from services.shipping.api import ShippingService
from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import payment as p
from shared.contracts import shipping as s
from shared.saga import Failure, Saga, SagaInstance, Step, encode_data
from shared.settings import Settings

PROMOTIONS_INELIGIBLE = ("One or more of the promotions on your order have become ineligible and were removed."
                         " Please check the new order amounts and try again.")
CART_CHANGED = "The order changed while it was being completed. Please check it and try again."
VARIANTS_DISCARDED = "Some line items in this order have products that are no longer available."
REFUSALS = {"promotions_ineligible": PROMOTIONS_INELIGIBLE, "variants_discarded": VARIANTS_DISCARDED}


# -- what the steps learn, and what it means ------------------------------------------------
def cart_locked(saga: SagaInstance, locked: c.CartLocked) -> dict[str, Any]:
    lines = [o.DeliveryLine(variant_id=line.variant_id, quantity=line.quantity, track_inventory=line.track_inventory)
             for line in locked.lines]
    return encode_data({"locked_lines": [line.model_dump() for line in lines], "item_total": locked.item_total,
                        "adjustment_total": locked.adjustment_total})


def cart_refused(saga: SagaInstance, refused: c.CartLockRefused) -> Failure:
    message = REFUSALS.get(refused.code, CART_CHANGED)
    return Failure(refused.code, message, "address" if refused.item_count else "cart")


def stock_allocated(saga: SagaInstance, allocated: s.StockAllocated) -> dict[str, Any]:
    return encode_data({"ship_total": allocated.ship_total or Decimal(0),
                        "backordered": any(unit.backordered for unit in allocated.units)})


def stock_refused(saga: SagaInstance, failed: s.StockAllocationFailed) -> Failure:
    # Outdated shipments are rebuilt by going through delivery again.
    return Failure(failed.code, failed.message, "address" if failed.code == "shipments_outdated" else "confirm")


def amount_to_charge(saga: SagaInstance) -> Decimal:
    """The locked total: the cart's items and adjustments, the allocated shipments' rates,
    and the tax on both (truncated to cents, as the order view computes it)."""
    data = saga.data
    items = Decimal(data["item_total"]) + Decimal(data["adjustment_total"])
    shipping = Decimal(data["ship_total"])
    return items + shipping + order_taxes(Decimal(data["tax_rate"]), items, shipping)["additional_tax_total"]


def something_to_pay(saga: SagaInstance) -> bool:
    """total > 0"""
    return amount_to_charge(saga) > 0


def payment_arguments(saga: SagaInstance) -> dict[str, Any]:
    return {"amount": str(amount_to_charge(saga))}


def payments_processed(saga: SagaInstance, processed: p.PaymentsProcessed) -> dict[str, Any]:
    return encode_data({"payment_total": processed.payment_total, "secured_total": processed.secured_total})


async def place_order(conn: asyncpg.Connection, order: Order, saga: SagaInstance, settings: Settings) -> None:
    order.complete(saga.id, total=amount_to_charge(saga), payment_total=Decimal(saga.data.get("payment_total", 0)),
                   reference=await next_reference(conn), backordered=saga.data.get("backordered", False))
    secured = saga.data.get("secured_total")  # absent: nothing to pay, or recorded before it was answered
    if secured is not None and Decimal(secured) == 0 and Decimal(saga.data.get("payment_total", 0)) == 0:
        await schedule_unpaid_release(conn, order.id, settings.unpaid_order_release_after_s)


async def schedule_unpaid_release(conn: asyncpg.Connection, number: str, release_after: float) -> None:
    """Placed with nothing paid nor authorised: released if still unpaid after
    UNPAID_ORDER_RELEASE_AFTER_S (`release_after`: commands.release_unpaid_orders), a row so
    the deadline survives restarts; written with the order's completion."""
    if release_after > 0:
        await conn.execute("INSERT INTO unpaid_order_releases (number, release_at)"
                           " VALUES ($1, now() + make_interval(secs => $2)) ON CONFLICT DO NOTHING",
                           number, float(release_after))


async def next_reference(conn: asyncpg.Connection) -> str:
    """GetCandy's order reference: YYYY-MM-NNNN, the month's highest plus one. The month is the
    database's (UTC, at the transaction's start), named in the one statement that counts it."""
    row = await conn.fetchrow(
        "INSERT INTO monthly_references (month, last) VALUES (to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM'), 1)"
        " ON CONFLICT (month) DO UPDATE SET last = monthly_references.last + 1 RETURNING month, last")
    return f"{row['month']}-{row['last']:04d}"


def completion_failed(order: Order, saga: SagaInstance) -> None:
    failure = saga.failure
    order.completion_failed(saga.id, code=failure.code, message=failure.message, state=failure.state,
                            step=COMPLETION.steps[saga.step].name, unanswered=list(failure.unanswered))


# -- the definition ---------------------------------------------------------------------------
# The pivot, `place_order`, is run here on the order itself (not a call of
# OrderService.complete, which starts the saga).

COMPLETION = Saga(
    name="completion",
    interfaces={"cart": CartService, "shipping": ShippingService, "payment": PaymentService},
    steps=(
        Step(call=lambda peers: peers.cart.lock_cart, arguments=lambda saga: {"lines": saga.data["lines"]},
             answers={c.CartLocked: cart_locked, c.CartLockRefused: cart_refused},
             undo=lambda peers: peers.cart.unlock_cart, compensated_by=c.CartUnlocked,
             deadline="saga_lock_cart_deadline_ms",
             on_timeout=Failure("step_timed_out", "The cart could not be locked in time. Please try again.",
                                "confirm")),
        Step(call=lambda peers: peers.shipping.allocate_stock,
             arguments=lambda saga: {"lines": saga.data["locked_lines"]},
             answers={s.StockAllocated: stock_allocated, s.StockAllocationFailed: stock_refused},
             undo=lambda peers: peers.shipping.release_stock, compensated_by=s.StockReleased,
             deadline="saga_stock_deadline_ms",
             on_timeout=Failure("step_timed_out", "Stock could not be allocated in time. Please try again.",
                                "confirm")),
        Step(call=lambda peers: peers.payment.process_payments, when=something_to_pay, arguments=payment_arguments,
             answers={p.PaymentsProcessed: payments_processed,
                      p.PaymentsDeclined: lambda saga, declined: Failure("payment_failed", declined.message,
                                                                         "payment"),
                      p.PaymentsRefused: lambda saga, refused: Failure(refused.code, refused.message, "payment")},
             undo=lambda peers: peers.payment.void_payments, compensated_by=p.PaymentsVoided,
             deadline="saga_payment_deadline_ms",
             on_timeout=Failure("payment_timed_out", "The payment could not be processed in time."
                                " Please try again.", "payment")),
        Step(run=place_order),
    ),
    on_failed=completion_failed,
)
