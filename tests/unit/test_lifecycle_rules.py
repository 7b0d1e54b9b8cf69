"""Each service's aggregate refuses changes to an order that is being completed or is
placed (no gateway check-then-act), and answers the saga's commands once. Pure: no I/O."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.cart.domain import Cart, Promotion
from services.order.domain import Order
from services.payment.domain import OrderPayments
from services.shipping.domain import Line, OrderShipments, StockLocation
from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import payment as p
from shared.contracts import shipping as s
from tests.helpers.aggregates import TEE, given, kinds

TEN_OFF = Promotion(1, "10off", "10 off", "order_flat", Decimal("10"), "USD")


def a_cart():
    history = given(Cart, "R1")
    history.when(lambda cart: cart.add_line(TEE, 2, new_line_id=7))
    history.when(lambda cart: cart.apply_promotion(TEN_OFF, currency="USD"))
    return history


def test_a_locked_cart_refuses_every_change_and_unlocking_frees_it():
    history = a_cart()
    [event] = history.when(lambda cart: cart.lock("req", expected=[(1, 2)], lapsed_codes=set(), reservable=[1]))
    assert isinstance(event, c.CartLocked) and event.item_total == Decimal("39.98")
    assert event.adjustment_total == Decimal("-10") and event.reserved_promotion_ids == [1]
    for change in (lambda cart: cart.add_line(TEE, 1, new_line_id=8), lambda cart: cart.set_quantity(7, 5),
                   lambda cart: cart.remove_line(7), lambda cart: cart.empty(),
                   lambda cart: cart.apply_promotion(TEN_OFF, currency="USD"),
                   lambda cart: cart.remove_promotion("10off")):
        assert history.refuses(change).code == "cart_locked"
    assert kinds(history.when(lambda cart: cart.unlock("req"))) == [c.CartUnlocked] and history.result == [1]
    assert history.when(lambda cart: cart.unlock("req")) == [] and history.result == []  # answered once
    history.when(lambda cart: cart.add_line(TEE, 1, new_line_id=8))


def test_a_lock_is_refused_when_the_lines_changed_and_lapsed_coupons_are_removed():
    history = a_cart()
    refused = history.when(lambda cart: cart.lock("a", expected=[(1, 3)], lapsed_codes=set(), reservable=[]))
    assert kinds(refused) == [c.CartLockRefused] and refused[0].code == "cart_changed"
    assert history.load().locked_by is None
    refused = history.when(lambda cart: cart.lock("b", expected=[(1, 2)], lapsed_codes={"10off"}, reservable=[1]))
    assert kinds(refused) == [c.PromotionRemoved, c.CartRepriced, c.CartLockRefused]
    cart = history.load()
    assert refused[-1].removed_codes == ["10off"] and cart.locked_by is None and not cart.promotions


def test_a_lock_replayed_after_its_compensation_does_nothing():
    history = a_cart()
    history.when(lambda cart: cart.unlock("late"))  # the lock command was dead-lettered; its compensation came first
    assert history.when(lambda cart: cart.lock("late", expected=[(1, 2)], lapsed_codes=set(), reservable=[])) == []
    assert history.load().locked_by is None


def shipments_with_a_rate():
    rate = s.ShippingRate(id=2, shipping_method_id=1, name="Ground", code="G", cost=Decimal("10"), selected=True)
    other = rate.model_copy(update={"id": 3, "shipping_method_id": 2, "cost": Decimal("15"), "selected": False})
    return given(OrderShipments, "R1", s.ShipmentsBuilt(order_number="R1", request_id="d", shipments=[s.Shipment(
        id=1, number="H1", stock_location_id=1, stock_location_name="Main", state="pending", rates=[rate, other],
        manifest=[s.ManifestItem(variant_id=1, quantity=2)])]))


MAIN = StockLocation(id=1, name="Main", on_hand={1: 5}, backorderable=frozenset())
LINES = [Line(variant_id=1, quantity=2, track_inventory=True)]


def test_allocated_shipments_refuse_rate_changes_until_released():
    history = shipments_with_a_rate()
    [allocated] = history.when(lambda shipments: shipments.allocate("req", LINES, [MAIN]))
    units = history.result
    assert units == [s.AllocatedUnit(stock_location_id=1, variant_id=1, quantity=2, shipment_number="H1")]
    assert allocated.ship_total == Decimal("10")
    assert history.refuses(lambda shipments: shipments.select_rate("H1", 3)).code == "shipments_locked"
    history.when(lambda shipments: shipments.release("req"))
    assert history.result == units
    assert history.when(lambda shipments: shipments.release("req")) == [] and history.result == []  # answered once
    history.when(lambda shipments: shipments.select_rate("H1", 3))


def test_a_release_before_any_allocation_is_answered_and_bars_a_late_allocation():
    history = shipments_with_a_rate()
    assert kinds(history.when(lambda shipments: shipments.release("req"))) == [s.StockReleased]
    assert history.result == []
    assert history.when(lambda shipments: shipments.allocate("req", LINES, [MAIN])) == [] and history.result == []
    assert not history.load().held


def payments_of(amount: str):
    return given(OrderPayments, "R1", p.PaymentCreated(
        order_number="R1", payment_id=1, payment_number="P1", payment_method_id=1, payment_method_name="Check",
        method_type="check", amount=Decimal(amount)))


@pytest.mark.parametrize("entered, code", [("29.99", "payment_mismatch"), (None, "no_payment")])
def test_payments_that_do_not_add_up_to_the_locked_total_are_refused(entered, code):
    history = payments_of(entered) if entered else given(OrderPayments, "R1")
    [refused] = history.when(lambda payments: payments.refuse_unless_covering("req", Decimal("42.49")))
    assert history.result is True
    assert isinstance(refused, p.PaymentsRefused) and refused.code == code
    assert history.when(lambda payments: payments.refuse_unless_covering("req", Decimal("42.49"))) == []
    assert history.result is True  # answered once
    covered = payments_of("42.49")
    assert covered.when(lambda payments: payments.refuse_unless_covering("other", Decimal("42.49"))) == []
    assert covered.result is False


def an_order(state: str = "confirm"):
    created = o.OrderCreated(number="R1", guest_token_digest=o.guest_token_digest("tok"), currency="USD")
    return given(Order, "R1", created,
                 o.CheckoutAdvanced(number="R1", from_state="cart", to_state=state))


def test_a_completing_order_is_locked_and_a_placed_one_refuses_every_customer_change():
    history = an_order()
    history.when(lambda order: order.request_completion(total=Decimal("10"), lines=[], has_valid_payment=True))
    request_id = history.result
    changes = (lambda order: order.update_contact(email="a@b.co", phone=None),
               lambda order: order.update_details(email="a@b.co"),
               lambda order: order.next(item_count=1, total=Decimal(1), shipments_ready=True),
               lambda order: order.request_completion(total=Decimal(1), lines=[], has_valid_payment=True))
    for change in changes:
        assert history.refuses(change).code == "order_locked"
    history.when(lambda order: order.complete(request_id, total=Decimal("10"), payment_total=Decimal("0"),
                                              reference=None))
    for change in changes:
        assert history.refuses(change).code == "order_placed"
    assert kinds(history.when(lambda order: order.cancel())) == [o.OrderCanceled]  # an admin operation still works


def placed_unpaid():
    history = an_order()
    history.when(lambda order: order.request_completion(total=Decimal("10"), lines=[], has_valid_payment=True))
    request_id = history.result
    history.when(lambda order: order.complete(request_id, total=Decimal("10"), payment_total=Decimal("0"),
                                              reference=None))
    return history


def test_an_order_left_unpaid_is_released_as_an_admin_cancel_unless_paid_canceled_or_shipped():
    history = placed_unpaid()
    [canceled] = history.when(lambda order: order.release_unpaid())
    assert history.result is True and isinstance(canceled, o.OrderCanceled) and canceled.reason == "unpaid"
    assert history.when(lambda order: order.release_unpaid()) == [] and history.result is False  # canceled already
    paid = placed_unpaid()
    paid.when(lambda order: order.payments_changed(payment_total=Decimal("10"), any_valid=True))
    assert paid.when(lambda order: order.release_unpaid()) == [] and paid.result is False
    # No order event records a shipment yet (shipping is outside Tillstream): the state is set by hand.
    shipped = placed_unpaid().load()
    shipped.shipment_state = "shipped"
    assert not shipped.release_unpaid() and not shipped.pending


def test_a_failed_completion_that_restarts_the_checkout_says_so():
    history = an_order()
    history.when(lambda order: order.request_completion(total=Decimal("10"), lines=[], has_valid_payment=True))
    request_id = history.result
    failed = history.when(lambda order: order.completion_failed(request_id, code="cart_changed", message="m",
                                                                state="address", step="lock_cart"))
    assert kinds(failed) == [o.CompletionFailed, o.CheckoutRestarted]
    order = history.load()
    assert order.state == "address" and order.completing is None


def test_a_guest_acts_only_with_the_orders_own_token():
    history = an_order()
    history.when(lambda order: order.authorize(None))
    history.when(lambda order: order.authorize("tok"))
    for wrong in ("nope", ""):
        assert history.refuses(lambda order, wrong=wrong: order.authorize(wrong)).status == 401
    assert given(Order, "R2").refuses(lambda order: order.authorize("tok")).status == 401  # unknown: as a wrong token
