"""Events of the order service (topic `order.events`, key = order number)."""
from __future__ import annotations

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
