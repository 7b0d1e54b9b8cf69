"""Events of the payment service (topic `payment.events`, key = order number).

Card numbers never appear here, nor anywhere else: the gateway tokenises a card when its
payment is entered, and events carry only the last digits. The gateway's token (what the
card is charged with) stays in the payment service's own table since PaymentCreated.v2.
"""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from shared.contracts.dead_letters import DeadLetterNotice
from shared.envelope import DomainEvent, upcaster


class CardSource(BaseModel):
    """What is shown of a card. `id` names it to the payment service, which alone keeps the
    gateway's token for it."""
    model_config = ConfigDict(frozen=True)
    id: int
    month: int
    year: int
    cc_type: str
    last_digits: str
    name: str | None = None


class CardSourceV1(CardSource):
    gateway_token: str


class PaymentCreatedV1(DomainEvent):
    """Superseded by v2 (stored v1 events are read as v2): its source carried the gateway's
    token for the card, with which the card is charged."""
    event_type = "payment.PaymentCreated"
    event_version = 1
    order_number: str
    payment_id: int
    payment_number: str
    payment_method_id: int
    payment_method_name: str
    method_type: str
    amount: Decimal
    source: CardSourceV1 | None = None


class PaymentCreated(DomainEvent):
    event_type = "payment.PaymentCreated"
    event_version = 2
    order_number: str
    payment_id: int
    payment_number: str
    payment_method_id: int
    payment_method_name: str
    method_type: str  # "check" or "gateway"
    amount: Decimal
    source: CardSource | None = None


@upcaster("payment.PaymentCreated", 1)
def _payment_created_without_gateway_token(payload: dict) -> dict:
    if isinstance(payload.get("source"), dict):
        payload["source"] = {k: v for k, v in payload["source"].items() if k != "gateway_token"}
    return payload


class PaymentInvalidated(DomainEvent):
    """A newer payment replaced this one while both were still in `checkout`."""
    event_type = "payment.PaymentInvalidated"
    order_number: str
    payment_id: int


class PaymentAuthorized(DomainEvent):
    event_type = "payment.PaymentAuthorized"
    order_number: str
    payment_id: int
    amount: Decimal
    authorization: str


class PaymentCaptured(DomainEvent):
    event_type = "payment.PaymentCaptured"
    order_number: str
    payment_id: int
    amount: Decimal
    authorization: str


class PaymentFailed(DomainEvent):
    event_type = "payment.PaymentFailed"
    order_number: str
    payment_id: int
    message: str


class PaymentsProcessed(DomainEvent):
    """Answer to order.PaymentRequested: payments were processed (checks left as they are)."""
    event_type = "payment.PaymentsProcessed"
    order_number: str
    request_id: str
    payment_total: Decimal  # completed (captured) payments
    # Authorised or captured by a gateway for this request (checks are neither); None in
    # events from before it was recorded.
    secured_total: Decimal | None = None


class PaymentsDeclined(DomainEvent):
    """Answer to order.PaymentRequested: the gateway declined a payment (`message` is its
    own); payments it had authorised for this request are voided by the compensation."""
    event_type = "payment.PaymentsDeclined"
    order_number: str
    request_id: str
    message: str


class PaymentVoided(DomainEvent):
    event_type = "payment.PaymentVoided"
    order_number: str
    payment_id: int


class PaymentRefunded(DomainEvent):
    event_type = "payment.PaymentRefunded"
    order_number: str
    payment_id: int
    amount: Decimal


class PaymentsRefused(DomainEvent):
    """Answer to order.PaymentRequested: nothing was sent to the gateway, because the
    payments entered do not add up to the amount to charge (the order changed after they
    were entered, as when Solidus invalidates payments), or there are none."""
    event_type = "payment.PaymentsRefused"
    order_number: str
    request_id: str
    code: str  # "payment_mismatch" | "no_payment"
    message: str
    entered_total: Decimal


class PaymentsVoided(DomainEvent):
    """Answer to order.PaymentVoidRequested: what the request had authorised or captured is
    voided at the gateway (each one also as `PaymentVoided`); empty when there was nothing."""
    event_type = "payment.PaymentsVoided"
    order_number: str
    request_id: str
    payment_ids: list[int] = []


class MessageDeadLettered(DeadLetterNotice):
    event_type = "payment.MessageDeadLettered"
