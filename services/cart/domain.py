"""The Cart aggregate (one per order number): line items, coupons and their totals. Pure."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from shared.aggregate import Aggregate, DomainError, not_found
from shared.contracts.cart import (
    CartEmptied, CartRepriced, LineItemAdded, LineItemQuantityChanged, LineItemRemoved,
    PromotionAdjustment, PromotionApplied, PromotionRemoved, VariantSnapshot,
)

MAX_QUANTITY = 10_000
CENT = Decimal("0.01")


@dataclass
class Line:
    id: int
    variant: VariantSnapshot
    quantity: int
    price: Decimal

    @property
    def amount(self) -> Decimal:
        return self.price * self.quantity


@dataclass(frozen=True)
class Promotion:
    id: int
    code: str
    name: str
    kind: str
    value: Decimal

    def discount(self, item_total: Decimal) -> Decimal:
        """The (negative) adjustment; never more than the items are worth."""
        if self.kind == "items_percent":
            off = (item_total * self.value / 100).quantize(CENT, ROUND_HALF_UP)
        else:
            off = self.value
        return -min(off, item_total)


def valid_quantity(quantity: object, *, allow_zero: bool) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise DomainError("invalid_quantity", "is not a number", field="quantity")
    if quantity > MAX_QUANTITY:
        raise DomainError("invalid_quantity", f"must be less than or equal to {MAX_QUANTITY}", field="quantity")
    if quantity < (0 if allow_zero else 1):
        raise DomainError("invalid_quantity", "must be greater than 0", field="quantity")
    return quantity


class Cart(Aggregate):
    aggregate_type = "Cart"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.lines: dict[int, Line] = {}
        self.promotions: dict[str, Promotion] = {}
        self.item_total = Decimal("0")
        self.adjustment_total = Decimal("0")

    # -- commands ---------------------------------------------------------------
    def add_line(self, variant: VariantSnapshot, quantity: int, *, new_line_id: int) -> Line:
        """Adds `quantity` of a variant: a new line, or more of the line it already has."""
        valid_quantity(quantity, allow_zero=False)
        existing = next((line for line in self.lines.values() if line.variant.id == variant.id), None)
        if existing is not None:
            total = existing.quantity + quantity
            if total > MAX_QUANTITY:
                raise DomainError("invalid_quantity", f"must be less than or equal to {MAX_QUANTITY}",
                                  field="quantity")
            self._record(LineItemQuantityChanged(order_number=self.id, line_item_id=existing.id, quantity=total))
            line = existing
        else:
            self._record(LineItemAdded(order_number=self.id, line_item_id=new_line_id, variant=variant,
                                       quantity=quantity, price=variant.price))
            line = self.lines[new_line_id]
        self._reprice(lines_changed=True)
        return line

    def set_quantity(self, line_id: int, quantity: int) -> Line | None:
        """Sets a line's quantity; zero (or less) removes the line and returns None."""
        if line_id not in self.lines:
            raise not_found("line item")
        if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity < 0:
            quantity = 0  # Solidus treats a negative quantity as zero
        valid_quantity(quantity, allow_zero=True)
        if quantity == 0:
            self._record(LineItemRemoved(order_number=self.id, line_item_id=line_id))
        elif quantity != self.lines[line_id].quantity:
            self._record(LineItemQuantityChanged(order_number=self.id, line_item_id=line_id, quantity=quantity))
        self._reprice(lines_changed=bool(self.pending))
        return self.lines.get(line_id)

    def remove_line(self, line_id: int) -> None:
        if line_id not in self.lines:
            raise not_found("line item")
        self._record(LineItemRemoved(order_number=self.id, line_item_id=line_id))
        self._reprice(lines_changed=True)

    def empty(self) -> None:
        if self.lines or self.promotions:
            self._record(CartEmptied(order_number=self.id))
        self._reprice()

    def apply_promotion(self, promotion: Promotion) -> None:
        if promotion.code in self.promotions:
            raise DomainError("coupon_code_already_applied", "The coupon code has already been applied to this order")
        self._record(PromotionApplied(order_number=self.id, promotion_id=promotion.id, code=promotion.code,
                                      name=promotion.name, kind=promotion.kind, value=promotion.value))
        self._reprice()

    def remove_promotion(self, code: str) -> None:
        if code not in self.promotions:
            raise DomainError("coupon_code_not_present",
                              "The coupon code you are trying to remove is not present on this order.")
        self._record(PromotionRemoved(order_number=self.id, code=code))
        self._reprice()

    # -- derived ----------------------------------------------------------------
    def adjustments(self) -> list[PromotionAdjustment]:
        item_total = sum((line.amount for line in self.lines.values()), Decimal("0"))
        result = []
        for promotion in self.promotions.values():
            amount = promotion.discount(item_total)
            item_total += amount  # stacked promotions never take the items below zero
            result.append(PromotionAdjustment(promotion_id=promotion.id, code=promotion.code,
                                              label=f"Promotion ({promotion.name})", amount=amount))
        return result

    def _reprice(self, *, lines_changed: bool = False) -> None:
        item_total = sum((line.amount for line in self.lines.values()), Decimal("0"))
        adjustments = self.adjustments()
        adjustment_total = sum((a.amount for a in adjustments), Decimal("0"))
        if self.pending or item_total != self.item_total or adjustment_total != self.adjustment_total:
            self._record(CartRepriced(
                order_number=self.id, item_total=item_total, adjustment_total=adjustment_total,
                total_quantity=sum(line.quantity for line in self.lines.values()),
                item_count=len(self.lines), adjustments=adjustments, lines_changed=lines_changed))

    # -- state changes ----------------------------------------------------------
    def _on_LineItemAdded(self, e: LineItemAdded) -> None:
        self.lines[e.line_item_id] = Line(e.line_item_id, e.variant, e.quantity, e.price)

    def _on_LineItemQuantityChanged(self, e: LineItemQuantityChanged) -> None:
        self.lines[e.line_item_id].quantity = e.quantity

    def _on_LineItemRemoved(self, e: LineItemRemoved) -> None:
        del self.lines[e.line_item_id]

    def _on_CartEmptied(self, e: CartEmptied) -> None:
        self.lines.clear()
        self.promotions.clear()

    def _on_PromotionApplied(self, e: PromotionApplied) -> None:
        self.promotions[e.code] = Promotion(e.promotion_id, e.code, e.name, e.kind, e.value)

    def _on_PromotionRemoved(self, e: PromotionRemoved) -> None:
        del self.promotions[e.code]

    def _on_CartRepriced(self, e: CartRepriced) -> None:
        self.item_total = e.item_total
        self.adjustment_total = e.adjustment_total
