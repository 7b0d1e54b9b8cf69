"""Events of the payment service (topic `payment.events`, key = order number).

Card numbers never appear here: the payment service keeps them in its vault and events
carry only the last digits and a gateway token.
"""
from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from shared.envelope import DomainEvent


class CardSource(BaseModel):
    model_config = ConfigDict(frozen=True)
    id: int
    month: int
    year: int
    cc_type: str
    last_digits: str
    name: str | None = None
    gateway_token: str


class PaymentCreated(DomainEvent):
    event_type = "payment.PaymentCreated"
    order_number: str
    payment_id: int
    payment_number: str
    payment_method_id: int
    payment_method_name: str
    method_type: str  # "check" or "gateway"
    amount: Decimal
    source: CardSource | None = None


class PaymentInvalidated(DomainEvent):
    """A newer payment replaced this one while both were still in `checkout`."""
    event_type = "payment.PaymentInvalidated"
    order_number: str
    payment_id: int
