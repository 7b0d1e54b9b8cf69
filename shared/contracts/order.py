"""Events of the order service (topic `order.events`, key = order number)."""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from shared.envelope import DomainEvent


class OrderCreated(DomainEvent):
    event_type = "order.OrderCreated"
    number: str
    guest_token: str
    currency: str
    email: str | None = None
    user_id: int | None = None


class CheckoutRestarted(DomainEvent):
    """The cart's contents changed mid-checkout: back to `cart`, then `address` if it has lines."""
    event_type = "order.CheckoutRestarted"
    number: str
    state: str


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
    """Step 1 of the order saga: `confirm` → complete was asked for. The shipping
    service answers by allocating stock for these lines."""
    event_type = "order.CompletionRequested"
    number: str
    request_id: str
    total: Decimal
    lines: list[DeliveryLine]


class PaymentRequested(DomainEvent):
    """Step 2: stock is secured; the payment service processes payments up to `amount`."""
    event_type = "order.PaymentRequested"
    number: str
    request_id: str
    amount: Decimal


class OrderCompleted(DomainEvent):
    event_type = "order.OrderCompleted"
    number: str
    request_id: str
    total: Decimal
    payment_total: Decimal
    payment_state: str
    shipment_state: str
    reference: str | None = None  # YYYY-MM-NNNN


class CompletionFailed(DomainEvent):
    """The saga compensated: stock (if allocated) is to be released; the order is back in
    `payment` (declined payment) or stays in `confirm` (insufficient stock)."""
    event_type = "order.CompletionFailed"
    number: str
    request_id: str
    code: str  # "payment_failed" | "insufficient_stock"
    message: str
    release_stock: bool
    state: str


class OrderCanceled(DomainEvent):
    """An admin canceled a completed order: shipping restocks what the completion
    allocated, payment voids authorisations and refunds captures."""
    event_type = "order.OrderCanceled"
    number: str
    completion_request_id: str


class PaymentStateChanged(DomainEvent):
    """After completion, payments were captured, voided or refunded."""
    event_type = "order.PaymentStateChanged"
    number: str
    payment_total: Decimal
    payment_state: str
    shipment_state: str | None
