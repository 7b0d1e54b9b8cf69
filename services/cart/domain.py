"""The Cart aggregate (one per order number): line items, coupons and their totals. Pure."""
from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from shared.aggregate import Aggregate, DomainError, not_found
from shared.contracts.cart import (
    CartEmptied,
    CartLocked,
    CartLockRefused,
    CartRepriced,
    CartUnlocked,
    LineItemAdded,
    LineItemQuantityChanged,
    LineItemRemoved,
    LockedLine,
    PromotionAdjustment,
    PromotionApplied,
    PromotionRemoved,
    VariantSnapshot,
)

MAX_QUANTITY = 10_000
CENT = Decimal("0.01")
CART_CHANGED = "The cart no longer holds the lines that were confirmed."
PROMOTIONS_INELIGIBLE = "One or more coupons expired or were used up by other orders; they were removed."
VARIANTS_DISCARDED = "Some lines hold variants that were discarded from the catalog."


def cart_locked() -> DomainError:
    """A completion locked the cart: it changes only if that completion fails."""
    return DomainError("cart_locked", "The order is being completed or has been placed; its cart cannot change.",
                       status=409)


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
    currency: str | None = None  # a flat promotion's; None for a percentage, which fits any currency

    def fits(self, currency: str) -> bool:
        """A flat amount is money of one currency: 10 USD off must not take 10 GBP off."""
        return self.kind == "items_percent" or self.currency == currency

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
        self.locked_by: str | None = None  # the completion (request id) that locked the cart
        self.lock_answered: set[str] = set()    # completions whose lock request was answered
        self.unlock_answered: set[str] = set()  # completions whose unlock request was answered

    # -- commands ---------------------------------------------------------------
    def _check_unlocked(self) -> None:
        if self.locked_by is not None:
            raise cart_locked()

    def add_line(self, variant: VariantSnapshot, quantity: int, *, new_line_id: int) -> Line:
        """Adds `quantity` of a variant: a new line, or more of the line it already has."""
        self._check_unlocked()
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
        self._check_unlocked()
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
        self._check_unlocked()
        if line_id not in self.lines:
            raise not_found("line item")
        self._record(LineItemRemoved(order_number=self.id, line_item_id=line_id))
        self._reprice(lines_changed=True)

    def empty(self) -> None:
        self._check_unlocked()
        if self.lines or self.promotions:
            self._record(CartEmptied(order_number=self.id))
        self._reprice()

    def apply_promotion(self, promotion: Promotion, *, currency: str) -> None:
        """Applies a coupon to the cart of an order in `currency`."""
        self._check_unlocked()
        if promotion.code in self.promotions:
            raise DomainError("coupon_code_already_applied", "The coupon code has already been applied to this order")
        if not promotion.fits(currency):
            raise DomainError("coupon_code_not_eligible", "This coupon code is not eligible for this order")
        self._record(PromotionApplied(order_number=self.id, promotion_id=promotion.id, code=promotion.code,
                                      name=promotion.name, kind=promotion.kind, value=promotion.value,
                                      currency=promotion.currency))
        self._reprice()

    def remove_promotion(self, code: str) -> None:
        self._check_unlocked()
        if code not in self.promotions:
            raise DomainError("coupon_code_not_present",
                              "The coupon code you are trying to remove is not present on this order.")
        self._record(PromotionRemoved(order_number=self.id, code=code))
        self._reprice()

    # -- the completion saga's step 1 (services/order/saga.py) -------------------------
    def lock(self, request_id: str, *, expected: list[tuple[int, int]], lapsed_codes: set[str],
             reservable: list[int], discarded_variants: AbstractSet[int] = frozenset()) -> None:
        """Lock the cart for a completion if it still holds the `expected` (variant, quantity)
        lines. `lapsed_codes`: its coupons that expired or were used up by other orders
        (judged with the promotions locked, see commands.lock_cart); they are removed and the
        lock refused, as Solidus's "promotions still eligible" guard does. Then refused if a
        line's variant is among `discarded_variants` (Solidus's "no discarded variants").
        `reservable`: the limited promotions to reserve for this order. Answered once per
        request, and never after the request was compensated (a command replayed late from
        the DLQ)."""
        if request_id in self.lock_answered or request_id in self.unlock_answered:
            return
        if sorted((line.variant.id, line.quantity) for line in self.lines.values()) != sorted(expected) \
                or self.locked_by is not None:
            self._record(CartLockRefused(order_number=self.id, request_id=request_id, code="cart_changed",
                                         message=CART_CHANGED, item_count=len(self.lines)))
            return
        if lapsed_codes:
            for code in sorted(lapsed_codes & set(self.promotions)):
                self._record(PromotionRemoved(order_number=self.id, code=code))
            self._reprice()
            self._record(CartLockRefused(order_number=self.id, request_id=request_id, code="promotions_ineligible",
                                         message=PROMOTIONS_INELIGIBLE, removed_codes=sorted(lapsed_codes),
                                         item_count=len(self.lines)))
            return
        if any(line.variant.id in discarded_variants for line in self.lines.values()):
            self._record(CartLockRefused(order_number=self.id, request_id=request_id, code="variants_discarded",
                                         message=VARIANTS_DISCARDED, item_count=len(self.lines)))
            return
        self._record(CartLocked(
            order_number=self.id, request_id=request_id, item_total=self.item_total,
            adjustment_total=self.adjustment_total, adjustments=self.adjustments(),
            reserved_promotion_ids=reservable,
            lines=[LockedLine(line_item_id=line.id, variant_id=line.variant.id, quantity=line.quantity,
                              price=line.price, track_inventory=line.variant.track_inventory)
                   for line in sorted(self.lines.values(), key=lambda line: line.id)]))

    def unlock(self, request_id: str) -> list[int]:
        """Compensation: unlock if this completion holds the lock; answered (once) either way.
        Returns the promotions whose reservation is to be released."""
        if request_id in self.unlock_answered:
            return []
        released = sorted(p.id for p in self.promotions.values()) if self.locked_by == request_id else []
        self._record(CartUnlocked(order_number=self.id, request_id=request_id, released_promotion_ids=released))
        return released

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
        self.promotions[e.code] = Promotion(e.promotion_id, e.code, e.name, e.kind, e.value, e.currency)

    def _on_PromotionRemoved(self, e: PromotionRemoved) -> None:
        del self.promotions[e.code]

    def _on_CartLocked(self, e: CartLocked) -> None:
        self.locked_by = e.request_id
        self.lock_answered.add(e.request_id)

    def _on_CartLockRefused(self, e: CartLockRefused) -> None:
        self.lock_answered.add(e.request_id)

    def _on_CartUnlocked(self, e: CartUnlocked) -> None:
        if self.locked_by == e.request_id:
            self.locked_by = None
        self.unlock_answered.add(e.request_id)

    def _on_CartRepriced(self, e: CartRepriced) -> None:
        self.item_total = e.item_total
        self.adjustment_total = e.adjustment_total
