"""Events of the order service (topic `order.events`, key = order number), and the completion
saga's commands (topic `order.saga`, key = order number)."""
from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from shared.contracts.dead_letters import DeadLetterNotice
from shared.envelope import DomainEvent, upcaster


def guest_token_digest(token: str) -> str:
    """What events and views keep of a guest token: its SHA-256, in hex. Tokens are 22
    random URL-safe characters (128 bits), so the digest cannot be turned back into one."""
    return hashlib.sha256(token.encode()).hexdigest()


def guest_token_matches(token: str | None, digest: str | None) -> bool:
    """Whether a presented token is the one `digest` was made from (constant time)."""
    if not isinstance(token, str) or not token or not digest:
        return False
    return hmac.compare_digest(guest_token_digest(token).encode(), digest.encode())



# The public dialects an order can be created through.
Dialect = Literal["solidus", "getcandy"]

class OrderCreatedV1(DomainEvent):
    """Superseded by v2 (stored v1 events are read as v2): it carried the guest token
    itself, which opens the order to whoever reads the topic or the store."""
    event_type = "order.OrderCreated"
    event_version = 1
    number: str
    guest_token: str
    currency: str
    email: str | None = None
    user_id: int | None = None


class OrderCreated(DomainEvent):
    """A guest's order (Solidus) or basket (GetCandy: a basket and its order are one order).
    The guest token is not here: only its digest (`guest_token_digest`), enough to check a
    presented token, useless to open the order."""
    event_type = "order.OrderCreated"
    event_version = 2
    number: str
    guest_token_digest: str  # SHA-256 of the guest token, hex
    currency: str
    email: str | None = None
    user_id: int | None = None
    # The public dialect that created the order; the other dialect's routes do not reach it
    # (admins excepted). None: created before dialects were recorded (reachable by both).
    dialect: Dialect | None = None


@upcaster("order.OrderCreated", 1)
def _order_created_with_token_digest(payload: dict) -> dict:
    token = payload.pop("guest_token")
    return {**payload, "guest_token_digest": guest_token_digest(token)}


class CheckoutRestarted(DomainEvent):
    """The cart's contents changed mid-checkout: back to `cart`, then `address` if it has lines."""
    event_type = "order.CheckoutRestarted"
    number: str
    state: str
    # The delivery request whose shipments the restart makes stale (added later: absent in
    # older events, which discard whatever shipments there are). Shipping discards only the
    # shipments built for it, so a restart it reads after a rebuild (by call) keeps the new ones.
    delivery_request_id: str | None = None


class Address(BaseModel):
    """A postal address as the order holds it (immutable: an edit is a new address id)."""
    model_config = ConfigDict(frozen=True)
    id: int
    name: str
    address1: str
    address2: str | None = None
    city: str
    zipcode: str
    phone: str | None = None
    alternative_phone: str | None = None
    company: str | None = None
    country_id: int
    country_iso: str
    state_id: int | None = None
    state_name: str | None = None
    # As GetCandy storefronts send them (echoed back there); optional for Solidus.
    firstname: str | None = None
    lastname: str | None = None
    email: str | None = None


class OrderEmailChanged(DomainEvent):
    event_type = "order.OrderEmailChanged"
    number: str
    email: str


class ContactDetailsChanged(DomainEvent):
    event_type = "order.ContactDetailsChanged"
    number: str
    email: str | None = None
    phone: str | None = None


class BillAddressChanged(DomainEvent):
    event_type = "order.BillAddressChanged"
    number: str
    address: Address


class ShipAddressChanged(DomainEvent):
    event_type = "order.ShipAddressChanged"
    number: str
    address: Address


class CheckoutAdvanced(DomainEvent):
    event_type = "order.CheckoutAdvanced"
    number: str
    from_state: str
    to_state: str


class DeliveryLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    variant_id: int
    quantity: int
    track_inventory: bool


class DeliveryRequested(DomainEvent):
    """Leaving `address`: the shipping service is asked to build shipments and rates
    for these lines (carried here, so shipping never builds from a stale copy)."""
    event_type = "order.DeliveryRequested"
    number: str
    request_id: str  # echoed by shipping's answer
    ship_address: Address
    currency: str
    lines: list[DeliveryLine]


class DeliveryRefused(DomainEvent):
    """Shipping could not serve the order; it stays in `address`."""
    event_type = "order.DeliveryRefused"
    number: str
    request_id: str  # the DeliveryRequested it answers
    code: str        # "no_rates" or "insufficient_stock"
    message: str


class CompletionRequested(DomainEvent):
    """The customer asked to place the order (`complete`, `process`): the completion saga
    starts (services/order/saga.py). `total` and `lines` are what the customer confirmed;
    what is charged and shipped is what the cart locks (`cart.CartLocked`)."""
    event_type = "order.CompletionRequested"
    number: str
    request_id: str  # the saga's id: every step's command and answer carries it
    total: Decimal
    lines: list[DeliveryLine]


# -- RETIRED: the completion saga's commands to its participants, once published on
# `order.saga` (keyed by order number). The saga now calls the participants' operations
# (services/order/saga.py: CartService.lock_cart, ...); these are no longer produced and are
# kept for the history stored before (`retired`).
class CartLockRequested(DomainEvent):
    """Step 1: the cart service locks the cart if it still holds `lines`, reserving its
    limited coupons; answered by `cart.CartLocked` or `cart.CartLockRefused`."""
    event_type = "order.CartLockRequested"
    retired = True
    number: str
    request_id: str
    lines: list[DeliveryLine]


class CartUnlockRequested(DomainEvent):
    """Compensation of step 1: unlock the cart and release its coupon reservations;
    answered by `cart.CartUnlocked`."""
    event_type = "order.CartUnlockRequested"
    retired = True
    number: str
    request_id: str


class StockAllocationRequested(DomainEvent):
    """Step 2: the shipping service takes exactly the locked lines from stock; answered by
    `shipping.StockAllocated` or `shipping.StockAllocationFailed`."""
    event_type = "order.StockAllocationRequested"
    retired = True
    number: str
    request_id: str
    lines: list[DeliveryLine]


class StockReleaseRequested(DomainEvent):
    """Compensation of step 2: put back what this request allocated; answered by
    `shipping.StockReleased`."""
    event_type = "order.StockReleaseRequested"
    retired = True
    number: str
    request_id: str


class PaymentRequested(DomainEvent):
    """Step 3: the payment service authorises (or purchases) the order's payments for
    `amount`, the locked total; answered by `payment.PaymentsProcessed`,
    `payment.PaymentsDeclined` or `payment.PaymentsRefused`."""
    event_type = "order.PaymentRequested"
    retired = True
    number: str
    request_id: str
    amount: Decimal


class PaymentVoidRequested(DomainEvent):
    """Compensation of step 3: void what this request authorised or captured; answered by
    `payment.PaymentsVoided`."""
    event_type = "order.PaymentVoidRequested"
    retired = True
    number: str
    request_id: str


# The retired commands (above).
SAGA_COMMANDS = (CartLockRequested, CartUnlockRequested, StockAllocationRequested, StockReleaseRequested,
                 PaymentRequested, PaymentVoidRequested)


class OrderCompleted(DomainEvent):
    """Step 4, the saga's pivot: the order is placed for the locked total."""
    event_type = "order.OrderCompleted"
    number: str
    request_id: str
    total: Decimal
    payment_total: Decimal
    payment_state: str
    shipment_state: str
    reference: str | None = None  # YYYY-MM-NNNN


class CompletionFailedV1(DomainEvent):
    """Superseded by v2 (stored v1 events are read as v2): `release_stock` told the shipping
    service to put stock back; compensation is now the saga's own commands."""
    event_type = "order.CompletionFailed"
    event_version = 1
    number: str
    request_id: str
    code: str
    message: str
    release_stock: bool
    state: str


class CompletionFailed(DomainEvent):
    """The completion did not place the order and every step it took was undone (stock
    released, coupons freed, authorisations voided), but for `unanswered_compensations`
    when an operator forced the end. The order is back in `state`:
    `payment` after a payment problem, `confirm` after a stock or time-out problem,
    `address` when the cart changed or a coupon became ineligible (the checkout restarts)."""
    event_type = "order.CompletionFailed"
    event_version = 2
    number: str
    request_id: str
    code: str  # e.g. "insufficient_stock", "payment_failed", "promotions_ineligible", "step_timed_out"
    message: str
    state: str
    step: str | None = None  # the saga step that failed
    # Compensations an operator stopped waiting for (`tillstream saga abort --force`): what
    # those steps took (stock, an authorisation, the cart's lock) may still be held.
    unanswered_compensations: list[str] = []


@upcaster("order.CompletionFailed", 1)
def _completion_failed_without_release_flag(payload: dict) -> dict:
    payload.pop("release_stock", None)
    return {**payload, "step": None}


class OrderCanceled(DomainEvent):
    """An admin canceled a completed order (or the system, one left unpaid: `reason`):
    shipping restocks what the completion allocated, payment voids authorisations and
    refunds captures."""
    event_type = "order.OrderCanceled"
    number: str
    completion_request_id: str
    # None: an admin's cancel. "unpaid": placed with nothing paid nor authorised, and still
    # unpaid UNPAID_ORDER_RELEASE_AFTER_S later.
    reason: str | None = None


class PaymentStateChanged(DomainEvent):
    """After completion, payments were captured, voided or refunded."""
    event_type = "order.PaymentStateChanged"
    number: str
    payment_total: Decimal
    payment_state: str
    shipment_state: str | None


class MessageDeadLettered(DeadLetterNotice):
    event_type = "order.MessageDeadLettered"
