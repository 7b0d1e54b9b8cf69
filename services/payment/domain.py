"""The OrderPayments aggregate (one per order number) and card-source rules. Pure."""
from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from shared.aggregate import Aggregate, DomainError
from shared.contracts.payment import (
    CardSource,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentCreated,
    PaymentFailed,
    PaymentInvalidated,
    PaymentRefunded,
    PaymentsDeclined,
    PaymentsProcessed,
    PaymentsRefused,
    PaymentsVoided,
    PaymentVoided,
)
from shared.validation import ascii_int

# Payments that count towards what an order is paid with (Solidus's `valid` payments).
VALID_STATES = ("checkout", "processing", "pending", "completed")
MISMATCH = "The order total changed after the payment was entered. Please enter the payment again."


@dataclass(frozen=True)
class PaymentMethod:
    id: int
    name: str
    method_type: str
    auto_capture: bool


@dataclass(frozen=True)
class CardDetails:
    """A validated card, before it is vaulted."""
    number: str
    month: int
    year: int
    name: str | None

    @property
    def cc_type(self) -> str:
        return {"4": "visa", "5": "master", "3": "american_express"}.get(self.number[:1], "bogus")


class InvalidPayment(DomainError):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("invalid_resource", "Invalid resource.", errors=errors)


# The payments' numeric(12,2) column: an amount must fit once rounded to cents.
MAX_AMOUNT = Decimal("9999999999.99")


def parse_amount(value: Any) -> Decimal:
    text = str(value if value is not None else "0")
    if isinstance(value, bool) or len(text) > 32:
        raise InvalidPayment({"amount": ["is not a number"]})
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise InvalidPayment({"amount": ["is not a number"]}) from None
    if not amount.is_finite() or abs(amount) > MAX_AMOUNT + Decimal("0.005"):
        raise InvalidPayment({"amount": ["is not a number"]})
    amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if abs(amount) > MAX_AMOUNT:  # 9999999999.995 rounds past the column
        raise InvalidPayment({"amount": [f"must be less than or equal to {MAX_AMOUNT}"]})
    return amount


def _number(value: Any) -> int | None:
    return ascii_int(value, digits=4)


def validate_card(source: Any, key: str) -> CardDetails:
    """Solidus's credit card validations; messages are full ("Card Number can't be blank")."""
    source = source if isinstance(source, dict) else {}
    number = "".join(ch for ch in str(source.get("number") or "")[:64] if "0" <= ch <= "9")
    messages = []
    if not number:
        messages.append("Card Number can't be blank")
    month, year = _number(source.get("month")), _number(source.get("year"))
    if "expiry" in source and (month is None or year is None):
        parts = str(source["expiry"]).replace(" ", "").split("/")
        if len(parts) == 2:
            month, year = _number(parts[0]), _number(parts[1])
            year = year + 2000 if year is not None and year < 100 else year
    if month is None or not 1 <= month <= 12:
        messages.append("Month is not a number")
    if year is None or not 0 < year <= 9999:
        messages.append("Year is not a number")
    if not str(source.get("verification_value") or "").strip():
        messages.append("Verification Value can't be blank")
    if messages or month is None or year is None:  # a missing month or year has its message
        raise InvalidPayment({key: messages})
    parts = [source.get(key) for key in ("first_name", "last_name")]
    name = source.get("name") or " ".join(p for p in parts if isinstance(p, str) and p) or None
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise InvalidPayment({key: ["Name is invalid"]})
    return CardDetails(number=number, month=month, year=year, name=name)


def new_payment_number() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))


@dataclass
class Payment:
    id: int
    number: str
    method_id: int
    method_type: str
    amount: Decimal
    state: str
    source: CardSource | None = None


class OrderPayments(Aggregate):
    aggregate_type = "OrderPayments"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.payments: dict[int, Payment] = {}
        self.concluded: set[str] = set()  # completion requests already answered
        self.voided_requests: set[str] = set()  # completion requests whose payments were voided
        self.processed: set[str] = set()  # completion requests whose payments went through

    @property
    def closed(self) -> bool:
        """Paid for by a completion that was not undone: the order is placed (the only step
        after payment is the saga's pivot, which cannot fail)."""
        return bool(self.processed - self.voided_requests)

    def create(self, *, payment_id: int, method: PaymentMethod, amount: Decimal, source: CardSource | None) -> None:
        """A new payment in `checkout`; older ones still in `checkout` become `invalid`.
        A placed order takes no new payment (admins capture, void or cancel instead)."""
        if self.closed:
            raise DomainError("order_placed", "The order has been placed and can no longer be changed.")
        for payment in list(self.payments.values()):
            if payment.state == "checkout":
                self._record(PaymentInvalidated(order_number=self.id, payment_id=payment.id))
        self._record(PaymentCreated(
            order_number=self.id, payment_id=payment_id, payment_number=new_payment_number(),
            payment_method_id=method.id, payment_method_name=method.name, method_type=method.method_type,
            amount=amount, source=source))

    def refuse_unless_covering(self, request_id: str, amount: Decimal) -> bool:
        """The completion saga's step 3 charges what the cart locked: if the payments entered
        do not add up to it (the order changed after they were entered), nothing is sent to
        the gateway and the step is refused. True when refused (or already answered)."""
        if request_id in self.concluded or request_id in self.voided_requests:
            return True
        entered = sum((p.amount for p in self.payments.values() if p.state in VALID_STATES), Decimal("0"))
        if entered == amount:
            return False
        code, message = ("no_payment", "No payment found") if entered == 0 else ("payment_mismatch", MISMATCH)
        self._record(PaymentsRefused(order_number=self.id, request_id=request_id, code=code, message=message,
                                     entered_total=entered))
        return True

    def to_void(self) -> list[Payment]:
        """What a failed completion voids: every payment it authorised or captured (the order
        is not placed, so no other is), and card payments the gateway may have charged before
        the outcome was recorded (the caller asks the gateway about those)."""
        return [p for p in self.payments.values()
                if p.state in ("pending", "completed", "processing")
                or (p.state == "checkout" and p.method_type == "gateway")]

    def voided_for(self, request_id: str, payment_ids: list[int]) -> None:
        """Compensation of step 3 answered (once, even when there was nothing to void)."""
        if request_id in self.voided_requests:
            return
        for payment_id in payment_ids:
            self._record(PaymentVoided(order_number=self.id, payment_id=payment_id))
        self._record(PaymentsVoided(order_number=self.id, request_id=request_id, payment_ids=payment_ids))

    def to_process(self) -> list[Payment]:
        """Payments a completion processes: card payments still in `checkout` (Solidus
        leaves payments that need no source, such as checks, as they are)."""
        return [p for p in self.payments.values() if p.state == "checkout" and p.method_type == "gateway"]

    def record_gateway_result(self, payment_id: int, *, captured: bool, success: bool, authorization: str | None,
                              message: str | None) -> None:
        payment = self.payments[payment_id]
        if success:
            event = PaymentCaptured if captured else PaymentAuthorized
            self._record(event(order_number=self.id, payment_id=payment_id, amount=payment.amount,
                               authorization=authorization or ""))
        else:
            self._record(PaymentFailed(order_number=self.id, payment_id=payment_id, message=message or "failed"))

    def conclude(self, request_id: str, declined: str | None) -> None:
        if declined:
            self._record(PaymentsDeclined(order_number=self.id, request_id=request_id, message=declined))
        else:
            captured = sum((p.amount for p in self.payments.values() if p.state == "completed"), Decimal("0"))
            secured = sum((p.amount for p in self.payments.values()
                           if p.state in ("pending", "completed") and p.method_type == "gateway"), Decimal("0"))
            self._record(PaymentsProcessed(order_number=self.id, request_id=request_id, payment_total=captured,
                                           secured_total=secured))

    def find(self, payment_id: int) -> Payment:
        if payment_id not in self.payments:
            raise DomainError("not_found", "payment not found", status=404)
        return self.payments[payment_id]

    def check_capturable(self, payment_id: int) -> Payment:
        payment = self.find(payment_id)
        # A check is captured when the money arrives (Solidus's Check#capture): no gateway is asked.
        if payment.state not in ("pending", "checkout") or payment.method_type not in ("gateway", "check"):
            raise DomainError("invalid_transition", f"Cannot capture a payment in state {payment.state}.")
        return payment

    def check_voidable(self, payment_id: int) -> Payment:
        payment = self.find(payment_id)
        if payment.state not in ("pending", "checkout", "completed", "processing"):
            raise DomainError("invalid_transition", f"Cannot void a payment in state {payment.state}.")
        return payment

    def captured(self, payment_id: int, authorization: str) -> None:
        payment = self.check_capturable(payment_id)
        self._record(PaymentCaptured(order_number=self.id, payment_id=payment_id, amount=payment.amount,
                                     authorization=authorization))

    def voided(self, payment_id: int) -> None:
        self.check_voidable(payment_id)
        self._record(PaymentVoided(order_number=self.id, payment_id=payment_id))

    def refunded(self, payment_id: int) -> None:
        payment = self.find(payment_id)
        if payment.state == "completed":
            self._record(PaymentRefunded(order_number=self.id, payment_id=payment_id, amount=payment.amount))

    def _on_PaymentVoided(self, e: PaymentVoided) -> None:
        self.payments[e.payment_id].state = "void"

    def _on_PaymentRefunded(self, e: PaymentRefunded) -> None:
        self.payments[e.payment_id].state = "refunded"

    def _on_PaymentCreated(self, e: PaymentCreated) -> None:
        self.payments[e.payment_id] = Payment(e.payment_id, e.payment_number, e.payment_method_id, e.method_type,
                                              e.amount, "checkout", e.source)

    def _on_PaymentAuthorized(self, e: PaymentAuthorized) -> None:
        self.payments[e.payment_id].state = "pending"

    def _on_PaymentCaptured(self, e: PaymentCaptured) -> None:
        self.payments[e.payment_id].state = "completed"

    def _on_PaymentFailed(self, e: PaymentFailed) -> None:
        self.payments[e.payment_id].state = "failed"

    def _on_PaymentsProcessed(self, e: PaymentsProcessed) -> None:
        self.concluded.add(e.request_id)
        self.processed.add(e.request_id)

    def _on_PaymentsDeclined(self, e: PaymentsDeclined) -> None:
        self.concluded.add(e.request_id)

    def _on_PaymentsRefused(self, e: PaymentsRefused) -> None:
        self.concluded.add(e.request_id)

    def _on_PaymentsVoided(self, e: PaymentsVoided) -> None:
        self.voided_requests.add(e.request_id)

    def _on_PaymentInvalidated(self, e: PaymentInvalidated) -> None:
        self.payments[e.payment_id].state = "invalid"
