"""The Order aggregate. Pure: no I/O; methods check rules and record events."""
from __future__ import annotations

import secrets

from shared.aggregate import Aggregate, DomainError
from shared.contracts.order import CheckoutRestarted, OrderCreated


CHECKOUT_STATES_AFTER_CART = ("address", "delivery", "payment", "confirm")


def new_order_number() -> str:
    return "R" + "".join(secrets.choice("0123456789") for _ in range(9))


def new_guest_token() -> str:
    return secrets.token_urlsafe(16)  # 22 URL-safe characters, like Solidus


class Order(Aggregate):
    aggregate_type = "Order"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.state: str | None = None
        self.guest_token: str | None = None
        self.email: str | None = None
        self.currency = "USD"

    def create(self, *, guest_token: str, currency: str, email: str | None, user_id: int | None) -> None:
        if self.exists:
            raise DomainError("order_exists", f"order {self.id} already exists")
        self._record(OrderCreated(number=self.id, guest_token=guest_token, currency=currency,
                                  email=email, user_id=user_id))

    def restart_checkout(self, *, has_items: bool) -> None:
        """The cart changed: Solidus's restart_checkout_flow (cart, then next if it has lines)."""
        if self.state in CHECKOUT_STATES_AFTER_CART:
            self._record(CheckoutRestarted(number=self.id, state="address" if has_items else "cart"))

    def _on_CheckoutRestarted(self, event: CheckoutRestarted) -> None:
        self.state = event.state

    def _on_OrderCreated(self, event: OrderCreated) -> None:
        self.state = "cart"
        self.guest_token = event.guest_token
        self.currency = event.currency
        self.email = event.email
