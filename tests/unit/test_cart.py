"""The cart's promotions, given its events, without a database: what `Promotion.discount`
takes off, and how applied promotions stack and reprice the cart."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.cart.domain import Cart, Promotion
from shared.contracts import cart as c
from tests.helpers.aggregates import TEE, given


def percent(value: str) -> Promotion:
    return Promotion(2, f"{value}percent", f"{value} percent", "items_percent", Decimal(value))


def flat(value: str) -> Promotion:
    return Promotion(1, f"{value}off", f"{value} off", "order_flat", Decimal(value), "USD")


# -- Promotion.discount -----------------------------------------------------------------------
@pytest.mark.parametrize("promotion, item_total, discount", [
    (flat("10"), "39.98", "-10"),
    (flat("10"), "4.00", "-4.00"),  # never more than the items are worth
    (flat("10"), "0", "0"),
    (percent("10"), "19.99", "-2.00"),  # 1.999, to the cent
    (percent("25"), "0.10", "-0.03"),  # 0.025: half a cent rounds up, not to the even cent
    (percent("15"), "0.30", "-0.05"),  # 0.045
    (percent("100"), "12.34", "-12.34"),
    (percent("150"), "20.00", "-20.00"),
])
def test_a_discount_is_the_promotions_value_at_most_the_item_total(promotion, item_total, discount):
    off = promotion.discount(Decimal(item_total))
    assert isinstance(off, Decimal) and off == Decimal(discount)
    assert off <= 0


def test_a_percent_discount_is_to_the_cent():
    assert percent("15").discount(Decimal("19.99")).as_tuple().exponent == -2  # 2.9985 → 3.00


# -- promotions on a cart ---------------------------------------------------------------------
def a_cart_of(quantity: int, *promotions: Promotion):
    return given(Cart, "R1", c.LineItemAdded(order_number="R1", line_item_id=7, variant=TEE, quantity=quantity,
                                             price=TEE.price),
                 *(c.PromotionApplied(order_number="R1", promotion_id=p.id, code=p.code, name=p.name, kind=p.kind,
                                      value=p.value) for p in promotions))


def test_applying_a_promotion_reprices_the_cart_with_its_adjustment():
    history = a_cart_of(2)
    applied, repriced = history.when(lambda cart: cart.apply_promotion(percent("10"), currency="USD"))
    assert isinstance(applied, c.PromotionApplied) and applied.kind == "items_percent"
    assert (repriced.item_total, repriced.adjustment_total) == (Decimal("39.98"), Decimal("-4.00"))
    assert repriced.adjustments == [c.PromotionAdjustment(promotion_id=2, code="10percent",
                                                          label="Promotion (10 percent)", amount=Decimal("-4.00"))]
    assert not repriced.lines_changed


def test_stacked_promotions_apply_in_order_and_never_take_the_items_below_zero():
    # 19.99 − 10.00 = 9.99; 50% of what is left is 5.00 (4.995 rounded up).
    assert [a.amount for a in a_cart_of(1, flat("10"), percent("50")).load().adjustments()] == [
        Decimal("-10"), Decimal("-5.00")]
    # 19.99 − 15 = 4.99; the second 15 off takes only those 4.99.
    second = Promotion(3, "other", "other", "order_flat", Decimal("15"), "USD")
    assert [a.amount for a in a_cart_of(1, flat("15"), second).load().adjustments()] == [
        Decimal("-15"), Decimal("-4.99")]


def test_a_coupon_applies_once():
    refused = a_cart_of(1, flat("10")).refuses(lambda cart: cart.apply_promotion(flat("10"), currency="USD"))
    assert refused.code == "coupon_code_already_applied"


def test_a_line_change_reprices_the_percent_discount():
    history = a_cart_of(1, percent("10"))
    *_, repriced = history.when(lambda cart: cart.set_quantity(7, 3))
    assert (repriced.item_total, repriced.adjustment_total, repriced.lines_changed) == (
        Decimal("59.97"), Decimal("-6.00"), True)
