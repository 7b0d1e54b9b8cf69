"""Each service's aggregate refuses changes to an order that is being completed or is
placed (no gateway check-then-act), and answers the saga's commands once. Pure: no I/O."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.cart.domain import Cart, Promotion
from services.order.domain import Order
from services.payment.domain import OrderPayments, PaymentMethod
from services.shipping.domain import Line, OrderShipments, StockLocation
from shared.aggregate import DomainError
from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import payment as p
from shared.contracts import shipping as s

TEE = c.VariantSnapshot(id=1, product_id=1, name="Tee", sku="T", price=Decimal("19.99"), track_inventory=True)
TEN_OFF = Promotion(1, "10off", "10 off", "order_flat", Decimal("10"))


def saved(aggregate):
    """As if stored and loaded again: pending events applied, none pending."""
    aggregate.version += len(aggregate.pending)
    aggregate.pending = []
    return aggregate


def a_cart() -> Cart:
    cart = Cart("R1")
    cart.add_line(TEE, 2, new_line_id=7)
    cart.apply_promotion(TEN_OFF)
    return saved(cart)


def test_a_locked_cart_refuses_every_change_and_unlocking_frees_it():
    cart = a_cart()
    cart.lock("req", expected=[(1, 2)], lapsed_codes=set(), reservable=[1])
    [event] = cart.pending
    assert isinstance(event, c.CartLocked) and event.item_total == Decimal("39.98")
    assert event.adjustment_total == Decimal("-10") and event.reserved_promotion_ids == [1]
    saved(cart)
    for change in (lambda: cart.add_line(TEE, 1, new_line_id=8), lambda: cart.set_quantity(7, 5),
                   lambda: cart.remove_line(7), cart.empty, lambda: cart.apply_promotion(TEN_OFF),
                   lambda: cart.remove_promotion("10off")):
        with pytest.raises(DomainError) as refused:
            change()
        assert refused.value.code == "cart_locked" and not cart.pending
    assert cart.unlock("req") == [1]
    saved(cart)
    assert cart.unlock("req") == [] and not cart.pending  # answered once
    cart.add_line(TEE, 1, new_line_id=8)


def test_a_lock_is_refused_when_the_lines_changed_and_lapsed_coupons_are_removed():
    cart = a_cart()
    cart.lock("a", expected=[(1, 3)], lapsed_codes=set(), reservable=[])
    assert [type(e) for e in cart.pending] == [c.CartLockRefused] and cart.pending[0].code == "cart_changed"
    saved(cart)
    assert cart.locked_by is None
    cart.lock("b", expected=[(1, 2)], lapsed_codes={"10off"}, reservable=[1])
    assert [type(e) for e in cart.pending] == [c.PromotionRemoved, c.CartRepriced, c.CartLockRefused]
    assert cart.pending[-1].removed_codes == ["10off"] and cart.locked_by is None and not cart.promotions


def test_a_lock_replayed_after_its_compensation_does_nothing():
    cart = a_cart()
    cart.unlock("late")  # the lock command was dead-lettered; its compensation came first
    saved(cart)
    cart.lock("late", expected=[(1, 2)], lapsed_codes=set(), reservable=[])
    assert not cart.pending and cart.locked_by is None


def shipments_with_a_rate() -> OrderShipments:
    shipments = OrderShipments("R1")
    rate = s.ShippingRate(id=2, shipping_method_id=1, name="Ground", code="G", cost=Decimal("10"), selected=True)
    other = rate.model_copy(update={"id": 3, "shipping_method_id": 2, "cost": Decimal("15"), "selected": False})
    shipments._record(s.ShipmentsBuilt(order_number="R1", request_id="d", shipments=[s.Shipment(
        id=1, number="H1", stock_location_id=1, stock_location_name="Main", state="pending", rates=[rate, other],
        manifest=[s.ManifestItem(variant_id=1, quantity=2)])]))
    return saved(shipments)


MAIN = StockLocation(id=1, name="Main", on_hand={1: 5}, backorderable=frozenset())
LINES = [Line(variant_id=1, quantity=2, track_inventory=True)]


def test_allocated_shipments_refuse_rate_changes_until_released():
    shipments = shipments_with_a_rate()
    units = shipments.allocate("req", LINES, [MAIN])
    assert units == [s.AllocatedUnit(stock_location_id=1, variant_id=1, quantity=2, shipment_number="H1")]
    assert shipments.pending[0].ship_total == Decimal("10")
    saved(shipments)
    with pytest.raises(DomainError) as refused:
        shipments.select_rate("H1", 3)
    assert refused.value.code == "shipments_locked"
    assert shipments.release("req") == units
    saved(shipments)
    assert shipments.release("req") == [] and not shipments.pending  # answered once
    shipments.select_rate("H1", 3)


def test_a_release_before_any_allocation_is_answered_and_bars_a_late_allocation():
    shipments = shipments_with_a_rate()
    assert shipments.release("req") == [] and isinstance(shipments.pending[0], s.StockReleased)
    saved(shipments)
    assert shipments.allocate("req", LINES, [MAIN]) == []
    assert not shipments.pending and not shipments.held


def payments_of(amount: str) -> OrderPayments:
    payments = OrderPayments("R1")
    payments.create(payment_id=1, method=PaymentMethod(1, "Check", "check", False), amount=Decimal(amount), source=None)
    return saved(payments)


@pytest.mark.parametrize("entered, code", [("29.99", "payment_mismatch"), (None, "no_payment")])
def test_payments_that_do_not_add_up_to_the_locked_total_are_refused(entered, code):
    payments = payments_of(entered) if entered else OrderPayments("R1")
    assert payments.refuse_unless_covering("req", Decimal("42.49"))
    [refused] = payments.pending
    assert isinstance(refused, p.PaymentsRefused) and refused.code == code
    saved(payments)
    assert payments.refuse_unless_covering("req", Decimal("42.49")) and not payments.pending  # answered once
    assert not payments_of("42.49").refuse_unless_covering("other", Decimal("42.49"))


def an_order(state: str = "confirm") -> Order:
    order = Order("R1")
    order._record(o.OrderCreated(number="R1", guest_token_digest=o.guest_token_digest("tok"), currency="USD"))
    order._record(o.CheckoutAdvanced(number="R1", from_state="cart", to_state=state))
    return saved(order)


def test_a_completing_order_is_locked_and_a_placed_one_refuses_every_customer_change():
    order = an_order()
    request_id = order.request_completion(total=Decimal("10"), lines=[], has_valid_payment=True)
    saved(order)
    changes = (lambda: order.update_contact(email="a@b.co", phone=None), lambda: order.update_details(email="a@b.co"),
               lambda: order.next(item_count=1, total=Decimal(1), shipments_ready=True),
               lambda: order.request_completion(total=Decimal(1), lines=[], has_valid_payment=True))
    for change in changes:
        with pytest.raises(DomainError) as refused:
            change()
        assert refused.value.code == "order_locked"
    order.complete(request_id, total=Decimal("10"), payment_total=Decimal("0"), reference=None)
    saved(order)
    for change in changes:
        with pytest.raises(DomainError) as refused:
            change()
        assert refused.value.code == "order_placed"
    order.cancel()  # an admin operation still works


def test_a_failed_completion_that_restarts_the_checkout_says_so():
    order = an_order()
    request_id = order.request_completion(total=Decimal("10"), lines=[], has_valid_payment=True)
    saved(order)
    order.completion_failed(request_id, code="cart_changed", message="m", state="address", step="lock_cart")
    assert [type(e) for e in order.pending] == [o.CompletionFailed, o.CheckoutRestarted]
    saved(order)
    assert order.state == "address" and order.completing is None


def test_a_guest_acts_only_with_the_orders_own_token():
    order = an_order()
    order.authorize(None)
    order.authorize("tok")
    for wrong in ("nope", ""):
        with pytest.raises(DomainError) as refused:
            order.authorize(wrong)
        assert refused.value.status == 401
    with pytest.raises(DomainError):
        Order("R2").authorize("tok")  # unknown: refused like a wrong token
