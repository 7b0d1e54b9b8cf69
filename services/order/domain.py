"""The Order aggregate: Solidus's checkout state machine. Pure: no I/O.

cart → address → delivery → [payment] → confirm → complete; `payment` only when the
total is above zero. Leaving `address` asks the shipping service for shipments: the
order records `DeliveryRequested` and stays in `address` until shipping answers
(`delivery_arrived` / `delivery_refused`), so no other step can slip in meanwhile.
"""
from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from decimal import Decimal

from services.order.addresses import InvalidFields
from shared.aggregate import Aggregate, DomainError
from shared.contracts.order import (
    Address,
    BillAddressChanged,
    CheckoutAdvanced,
    CheckoutRestarted,
    CompletionFailed,
    CompletionRequested,
    ContactDetailsChanged,
    DeliveryLine,
    DeliveryRefused,
    DeliveryRequested,
    Dialect,
    OrderCanceled,
    OrderCompleted,
    OrderCreated,
    OrderEmailChanged,
    PaymentStateChanged,
    ShipAddressChanged,
    guest_token_digest,
    guest_token_matches,
)
from shared.validation import valid_email

CHECKOUT_STATES_AFTER_CART = ("address", "delivery", "payment", "confirm")
PLACED_STATES = ("complete", "canceled")
NO_ITEMS = "There are no items for this order. Please add an item to the order to continue."
# The semantic lock of a completing order: no step until its saga settles.
BEING_COMPLETED = "The order is being completed; please try again shortly."
PLACED = "The order has been placed and can no longer be changed."
MISSING_BILLING = "The order is missing billing information"  # GetCandy's words (its `process`)
BILLING_REQUIRED = ("firstname", "lastname", "address1", "city", "zipcode", "country_iso")


def new_order_number() -> str:
    return "R" + "".join(secrets.choice("0123456789") for _ in range(9))


def new_guest_token() -> str:
    return secrets.token_urlsafe(16)  # 22 URL-safe characters, like Solidus


class CheckoutRefused(DomainError):
    """A state transition's guard failed (Solidus's could_not_transition)."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("could_not_transition", "The order could not be transitioned.", errors=errors)
        self.errors = errors


def order_locked() -> DomainError:
    """A completion is in progress (FTGO's pending state: a semantic lock until the saga settles)."""
    return DomainError("order_locked", BEING_COMPLETED, status=409)


def order_placed() -> DomainError:
    """Only explicit admin operations (cancel, payment actions) change a placed order."""
    return DomainError("order_placed", PLACED, status=422)


def billing_missing() -> DomainError:
    return DomainError("billing_missing", MISSING_BILLING, status=403)


def unauthorized() -> DomainError:
    return DomainError("unauthorized", "not this order's token", status=401)


class Order(Aggregate):
    aggregate_type = "Order"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.state: str | None = None
        self.guest_token_digest: str | None = None  # the token itself is never kept (nor published)
        self.dialect: Dialect | None = None
        self.email: str | None = None
        self.currency = "USD"
        self.bill_address: Address | None = None
        self.ship_address: Address | None = None
        self.pending_delivery: str | None = None  # request id of a DeliveryRequested awaiting its answer
        self.delivery_request: DeliveryRequested | None = None  # the latest, answered or not
        self.deliveries_requested = 0  # DeliveryRequested events so far: the first has no shipments before it
        self.completing: str | None = None  # request id of the completion in progress (the saga)
        self.completed_by: str | None = None  # request id of the completion that placed the order
        self.total = Decimal("0")  # once placed: what the completion charged for
        self.payment_total = Decimal("0")
        self.payment_state: str | None = None
        self.shipment_state: str | None = None
        self.backordered = False  # placed with units sold on backorder: its shipment_state stays `backorder`

    # -- commands ---------------------------------------------------------------
    def create(self, *, guest_token: str, currency: str, email: str | None, user_id: int | None,
               dialect: Dialect | None = None) -> None:
        if self.exists:
            raise DomainError("order_exists", f"order {self.id} already exists")
        self._record(OrderCreated(number=self.id, guest_token_digest=guest_token_digest(guest_token),
                                  currency=currency, email=email, user_id=user_id, dialect=dialect))

    def authorize(self, guest_token: str | None) -> None:
        """With `guest_token` the caller is a guest: only the order's own token will do (an
        unknown order is refused the same way, so a token reveals nothing of other orders)."""
        if guest_token is not None and (not self.exists or not guest_token_matches(guest_token,
                                                                                   self.guest_token_digest)):
            raise unauthorized()

    def _check_changeable(self) -> None:
        """What a customer's change needs: neither placed nor being completed."""
        if self.state in PLACED_STATES:
            raise order_placed()
        if self.completing:
            raise order_locked()

    def check_processable(self) -> None:
        """GetCandy's `process` guards, before any step: a placed order was processed already
        (`order_placed`); one without a full billing address is refused (403)."""
        if self.state in PLACED_STATES:
            raise order_placed()
        bill = self.bill_address
        if bill is None or not all(getattr(bill, name) for name in BILLING_REQUIRED):
            raise billing_missing()

    def update_details(self, *, email: str | None = None, bill_address: Address | None = None,
                       ship_address: Address | None = None) -> None:
        self._check_changeable()
        if email is not None:
            if not valid_email(email):
                raise InvalidFields({"email": ["is invalid"]})
            if email != self.email:
                self._record(OrderEmailChanged(number=self.id, email=email))
        if bill_address is not None and _differs(bill_address, self.bill_address):
            self._record(BillAddressChanged(number=self.id, address=bill_address))
        if ship_address is not None and _differs(ship_address, self.ship_address):
            self._record(ShipAddressChanged(number=self.id, address=ship_address))

    def update_contact(self, *, email: str | None, phone: str | None) -> None:
        self._check_changeable()
        if email is not None and not valid_email(email):
            raise InvalidFields({"email": ["is invalid"]})
        self._record(ContactDetailsChanged(number=self.id, email=email, phone=phone))

    def next(self, *, item_count: int, total: Decimal, shipments_ready: bool,
             lines: Sequence[DeliveryLine] = (), require_email: bool = True) -> None:
        """One step forward. Leaving `address` only requests delivery (see module doc)."""
        self._check_changeable()
        if self.pending_delivery:
            raise CheckoutRefused({})
        match self.state:
            case "cart":
                if item_count == 0:
                    raise CheckoutRefused({"base": [NO_ITEMS]})
                self._advance("address")
            case "address":
                errors: dict[str, list[str]] = {}
                if not self.email and require_email:
                    errors["email"] = ["can't be blank"]
                ship_address = self.ship_address
                if ship_address is None:
                    errors["base"] = ["Valid shipping address required"]
                if errors or ship_address is None:
                    raise CheckoutRefused(errors)
                self._record(DeliveryRequested(number=self.id, request_id=str(uuid.uuid4()),
                                               ship_address=ship_address, currency=self.currency,
                                               lines=list(lines)))
            case "delivery":
                if not shipments_ready:
                    raise CheckoutRefused(
                        {"base": ["We are unable to calculate shipping rates for the selected items."]})
                self._advance("payment" if total > 0 else "confirm")
            case "payment":
                self._advance("confirm")
            case _:
                raise CheckoutRefused({})

    def delivery_arrived(self, request_id: str) -> None:
        if self.pending_delivery == request_id and self.state == "address":
            self._advance("delivery")

    def delivery_refused(self, request_id: str, code: str, message: str) -> None:
        if self.pending_delivery == request_id:
            self._record(DeliveryRefused(number=self.id, request_id=request_id, code=code, message=message))

    # -- the completion saga (services/order/saga.py runs it) -------------------------
    def request_completion(self, *, total: Decimal, lines: list[DeliveryLine], has_valid_payment: bool) -> str:
        """Solidus's guards before `complete`; the saga (services/order/saga.py) starts with it."""
        self._check_changeable()
        if self.state != "confirm" or self.pending_delivery:
            raise CheckoutRefused({})
        if total > 0 and not has_valid_payment:
            raise CheckoutRefused({"base": ["No payment found"]})
        request_id = str(uuid.uuid4())
        self._record(CompletionRequested(number=self.id, request_id=request_id, total=total, lines=list(lines)))
        return request_id

    def complete(self, request_id: str, *, total: Decimal, payment_total: Decimal, reference: str | None,
                 backordered: bool = False) -> None:
        """The saga's pivot: every step before it succeeded. `backordered`: some units were
        sold on backorder (Solidus's shipment_state is then `backorder` whatever is paid)."""
        if self.completing != request_id:
            return
        balance = total - payment_total
        payment_state = "balance_due" if balance > 0 else "credit_owed" if balance < 0 else "paid"
        self._record(OrderCompleted(number=self.id, request_id=request_id, total=total, payment_total=payment_total,
                                    payment_state=payment_state,
                                    shipment_state=shipment_state(payment_state, backordered=backordered),
                                    reference=reference))

    def completion_failed(self, request_id: str, *, code: str, message: str, state: str, step: str | None,
                          unanswered: list[str] | None = None) -> None:
        """Every step the saga took is undone (but those whose compensations an operator gave
        up on, `unanswered`): back to `state` (`address` restarts the checkout)."""
        if self.completing != request_id:
            return
        self._record(CompletionFailed(number=self.id, request_id=request_id, code=code, message=message,
                                      state=state, step=step, unanswered_compensations=unanswered or []))
        if state in ("cart", "address"):
            self._restart(state)

    def cancel(self) -> None:
        """Solidus's `cancel`: complete → canceled while nothing has shipped."""
        completion = self.completed_by  # set with the state `complete`
        if not self._cancelable() or completion is None:
            raise CheckoutRefused({})
        self._record(OrderCanceled(number=self.id, completion_request_id=completion))

    def release_unpaid(self) -> bool:
        """The system's cancel of an order placed with nothing paid nor authorised (a check,
        GetCandy's offline payment) once its time is up: as an admin's cancel (its stock goes
        back, its coupons are freed), unless it was paid, canceled or shipped meanwhile."""
        completion = self.completed_by
        if not self._cancelable() or completion is None or self.payment_total != 0 or self.payment_state == "paid":
            return False
        self._record(OrderCanceled(number=self.id, completion_request_id=completion, reason="unpaid"))
        return True

    def _cancelable(self) -> bool:
        return self.state == "complete" and self.shipment_state in (None, "ready", "backorder", "pending")

    def payments_changed(self, *, payment_total: Decimal, any_valid: bool) -> None:
        """Recompute payment_state (Solidus's order updater) once the order is placed."""
        if self.state not in ("complete", "canceled"):
            return
        balance = self.total - payment_total
        if self.state == "canceled" and payment_total == 0:
            payment_state = "void"
        elif not any_valid and balance != 0:
            payment_state = "failed"
        else:
            payment_state = "balance_due" if balance > 0 else "credit_owed" if balance < 0 else "paid"
        shipments = self.shipment_state
        if self.state == "complete":
            shipments = shipment_state(payment_state, backordered=self.backordered)
        if (payment_total, payment_state, shipments) != (self.payment_total, self.payment_state,
                                                         self.shipment_state):
            self._record(PaymentStateChanged(number=self.id, payment_total=payment_total,
                                             payment_state=payment_state, shipment_state=shipments))

    # The states a cart change restarts the checkout from: from any other, `restart_checkout`
    # records nothing (so the view may take a cart change without the Order, premised on its
    # state: services/order/consumers.py inline_view_changes).
    CART_CHANGE_RESTARTS_FROM = CHECKOUT_STATES_AFTER_CART

    def restart_checkout(self, *, has_items: bool) -> None:
        """The cart changed: Solidus's restart_checkout_flow (cart, then next if it has lines)."""
        if self.state in self.CART_CHANGE_RESTARTS_FROM and not self.completing:
            self._restart("address" if has_items else "cart")

    def _restart(self, state: str) -> None:
        """Back to `state`; the shipments built for the latest delivery request are stale."""
        request = self.delivery_request
        self._record(CheckoutRestarted(number=self.id, state=state,
                                       delivery_request_id=request.request_id if request else None))

    def _advance(self, to_state: str) -> None:
        if self.state is None:  # not created: nothing to advance
            raise CheckoutRefused({})
        self._record(CheckoutAdvanced(number=self.id, from_state=self.state, to_state=to_state))

    # -- state changes ----------------------------------------------------------
    def _on_OrderCreated(self, event: OrderCreated) -> None:
        self.state = "cart"
        self.guest_token_digest = event.guest_token_digest
        self.dialect = event.dialect
        self.currency = event.currency
        self.email = event.email

    def _on_OrderEmailChanged(self, event: OrderEmailChanged) -> None:
        self.email = event.email

    def _on_ContactDetailsChanged(self, event: ContactDetailsChanged) -> None:
        self.email = event.email or self.email

    def _on_BillAddressChanged(self, event: BillAddressChanged) -> None:
        self.bill_address = event.address

    def _on_ShipAddressChanged(self, event: ShipAddressChanged) -> None:
        self.ship_address = event.address

    def _on_CheckoutAdvanced(self, event: CheckoutAdvanced) -> None:
        self.state = event.to_state
        self.pending_delivery = None

    def _on_CheckoutRestarted(self, event: CheckoutRestarted) -> None:
        self.state = event.state
        self.pending_delivery = None

    def _on_DeliveryRequested(self, event: DeliveryRequested) -> None:
        self.pending_delivery = event.request_id
        self.delivery_request = event
        self.deliveries_requested += 1

    def _on_DeliveryRefused(self, event: DeliveryRefused) -> None:
        self.pending_delivery = None

    def _on_CompletionRequested(self, event: CompletionRequested) -> None:
        self.completing = event.request_id

    def _on_OrderCompleted(self, event: OrderCompleted) -> None:
        self.state = "complete"
        self.completing = None
        self.total = event.total
        self.completed_by = event.request_id
        self.payment_total = event.payment_total
        self.payment_state = event.payment_state
        self.shipment_state = event.shipment_state
        self.backordered = event.shipment_state == "backorder"

    def _on_OrderCanceled(self, event: OrderCanceled) -> None:
        self.state = "canceled"

    def _on_PaymentStateChanged(self, event: PaymentStateChanged) -> None:
        self.payment_total = event.payment_total
        self.payment_state = event.payment_state
        self.shipment_state = event.shipment_state

    def _on_CompletionFailed(self, event: CompletionFailed) -> None:
        self.state = event.state
        self.completing = None


def shipment_state(payment_state: str, *, backordered: bool) -> str:
    """Solidus's order shipment_state once placed (before anything ships)."""
    if backordered:
        return "backorder"
    return "ready" if payment_state == "paid" else "pending"


def _differs(new: Address, old: Address | None) -> bool:
    return old is None or new.model_dump(exclude={"id"}) != old.model_dump(exclude={"id"})
