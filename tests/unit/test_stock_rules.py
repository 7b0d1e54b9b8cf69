"""Where units come from (issue #18), decided by the shipping aggregate without a database:
packing over stock locations at delivery, taking the units at completion (on hand now, or
backordered), re-rating a shipment; the cart refusing discarded variants; the order's
shipment_state once units are backordered."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.cart.domain import Cart
from services.order.domain import Order
from services.shipping.domain import Line, Method, OrderShipments, StockLocation, plan_packages, take_units, uncovered
from shared.aggregate import DomainError
from shared.contracts import cart as c
from shared.contracts import order as o
from shared.contracts import shipping as s
from tests.helpers.aggregates import TEE, given, kinds

GROUND = Method(1, "Ground", "GRND", Decimal("10"))


def location(id: int, on_hand: dict[int, int], backorderable: set[int] = frozenset()) -> StockLocation:
    return StockLocation(id=id, name=f"L{id}", on_hand=on_hand, backorderable=frozenset(backorderable))


def packed(lines, locations) -> list[tuple[int, list[tuple[int, int, int]]]]:
    return [(loc.id, [(m.variant_id, m.quantity, m.backordered) for m in manifest])
            for loc, manifest in plan_packages(lines, locations)]


def test_a_line_one_location_cannot_fill_is_split_over_locations_on_hand_first():
    lines = [Line(1, 5, True), Line(2, 1, True)]
    assert packed(lines, [location(1, {1: 2, 2: 1}), location(2, {1: 10})]) == [
        (1, [(1, 2, 0), (2, 1, 0)]), (2, [(1, 3, 0)])]


def test_backordered_units_come_after_every_location_on_hand_and_ship_apart():
    lines = [Line(1, 6, True)]
    # Location 2's units on hand before location 1's backorder.
    assert packed(lines, [location(1, {1: 1}, {1}), location(2, {1: 2})]) == [
        (1, [(1, 1, 0)]), (1, [(1, 3, 3)]), (2, [(1, 2, 0)])]
    with pytest.raises(DomainError) as refused:
        plan_packages(lines, [location(1, {1: 1}), location(2, {1: 2})])
    assert refused.value.code == "insufficient_stock"
    # A count already below zero (earlier backorders) offers nothing on hand.
    assert packed([Line(1, 1, True)], [location(1, {1: -4}, {1})]) == [(1, [(1, 1, 1)])]
    assert packed([Line(9, 3, False)], [location(1, {})]) == [(1, [(9, 3, 0)])]  # untracked: unlimited


def built(lines, locations):
    history = given(OrderShipments, "R1")
    history.when(lambda shipments: shipments.build("d", lines, locations, [GROUND], list(range(100, 120)),
                                                   country_iso="US", currency="USD"))
    return history


def test_completion_takes_units_where_planned_deciding_what_is_backordered_now():
    lines = [Line(1, 3, True)]
    shipments = built(lines, [location(1, {1: 1}, {1})]).load()  # planned: 1 on hand, 2 backordered
    # Stock came in meanwhile: all three on hand now.
    units = take_units(shipments.shipments, lines, [location(1, {1: 5}, {1})])
    assert [(u.stock_location_id, u.quantity, u.backordered) for u in units] == [(1, 1, 0), (1, 2, 0)]
    # Or it went: everything backordered (the location allows it).
    units = take_units(shipments.shipments, lines, [location(1, {1: 0}, {1})])
    assert [(u.quantity, u.backordered) for u in units] == [(1, 1), (2, 2)]
    assert {u.shipment_number for u in units} == {sh.number for sh in shipments.shipments}


def test_completion_refuses_a_sold_out_planned_location_and_outdated_shipments():
    lines = [Line(1, 2, True)]
    history = built(lines, [location(1, {1: 2}), location(2, {1: 9})])
    shipments = history.load()
    with pytest.raises(DomainError) as refused:  # planned at 1, which sold out: not taken elsewhere
        take_units(shipments.shipments, lines, [location(1, {1: 1}), location(2, {1: 9})])
    assert refused.value.code == "insufficient_stock"
    with pytest.raises(DomainError) as refused:
        take_units(shipments.shipments, [Line(1, 3, True)], [location(1, {1: 9})])
    assert refused.value.code == "shipments_outdated"
    [failed] = history.when(lambda shipments: shipments.allocate("req", [Line(1, 3, True)], [location(1, {1: 9})]))
    assert isinstance(failed, s.StockAllocationFailed) and failed.code == "shipments_outdated"


def test_select_method_rerates_the_shipment_for_that_method_alone():
    history = built([Line(1, 1, True)], [location(1, {1: 1})])
    number = history.load().shipments[0].number
    express = Method(2, "Express", "EXPR", Decimal("15"))
    assert kinds(history.when(lambda shipments: shipments.select_method(number, express, new_rate_id=500))) == [
        s.ShipmentRatesReplaced]
    shipments = history.load()
    assert [(r.id, r.name, r.cost, r.selected) for r in shipments.shipments[0].rates] == [
        (500, "Express", Decimal("15"), True)]
    assert shipments.destination == ("US", "USD")


ONE_TEE = (Line(1, 1, True),)


def build(request_id: str, lines=ONE_TEE, requested_at: int | None = None):
    return lambda shipments: shipments.build(request_id, list(lines), [location(1, {1: 5})], [GROUND],
                                             list(range(100, 120)), country_iso="US", currency="USD",
                                             requested_at=requested_at)


def test_a_restart_discards_only_the_shipments_built_for_the_request_it_names():
    history = given(OrderShipments, "R1")
    history.when(build("d1"))
    # The order rebuilt by call (d2) before shipping read the restart that made d1 stale.
    assert kinds(history.when(build("d2"))) == [s.ShipmentsBuilt]
    assert history.when(lambda shipments: shipments.discard("d1")) == []
    assert history.load().shipments and history.load().built_for == "d2"
    assert kinds(history.when(lambda shipments: shipments.discard("d2"))) == [s.ShipmentsDiscarded]
    assert history.load().shipments == []
    # An older restart names no request: whatever shipments there are go.
    history.when(build("d3"))
    assert kinds(history.when(lambda shipments: shipments.discard(None))) == [s.ShipmentsDiscarded]


def test_a_delivery_request_is_answered_once_however_often_it_is_asked():
    history = given(OrderShipments, "R1")
    assert kinds(history.when(build("d1"))) == [s.ShipmentsBuilt]
    assert history.when(build("d1")) == []  # the call, then the event from Kafka
    assert history.when(lambda shipments: shipments.discard("d1"))
    assert history.when(build("d1")) == []  # nor rebuilt once discarded
    refused = given(OrderShipments, "R1")
    assert kinds(refused.when(build("d2", [Line(1, 9, True)]))) == [s.ShipmentsUnavailable]
    assert refused.when(build("d2")) == []


def test_a_request_older_than_one_answered_is_not_built_over_the_newer_shipments():
    # d1's call was lost; the checkout restarted and d2 was built by call before shipping's
    # consumer read d1's DeliveryRequested (then the restart naming d1) from Kafka.
    history = given(OrderShipments, "R1")
    assert kinds(history.when(build("d2", requested_at=9))) == [s.ShipmentsBuilt]
    assert history.when(build("d1", requested_at=5)) == []
    assert history.when(lambda shipments: shipments.discard("d1")) == []
    assert history.load().built_for == "d2" and history.load().shipments
    assert kinds(history.when(build("d3", requested_at=12))) == [s.ShipmentsBuilt]  # a newer one is


def test_the_cart_refuses_its_lock_while_it_holds_a_discarded_variant():
    history = given(Cart, "R1", c.LineItemAdded(order_number="R1", line_item_id=7, variant=TEE, quantity=1,
                                                price=TEE.price))
    [refused] = history.when(lambda cart: cart.lock("req", expected=[(1, 1)], lapsed_codes=set(), reservable=[],
                                                    discarded_variants={1}))
    assert isinstance(refused, c.CartLockRefused) and refused.code == "variants_discarded"
    assert history.load().locked_by is None


def test_a_backordered_order_keeps_its_backorder_shipment_state_when_paid():
    created = o.OrderCreated(number="R1", guest_token_digest=o.guest_token_digest("t"), currency="USD", email="a@b.c")
    history = given(Order, "R1", created,
                    o.CheckoutAdvanced(number="R1", from_state="cart", to_state="confirm"),
                    o.CompletionRequested(number="R1", request_id="c1", total=Decimal("10"), lines=[]))
    [completed] = history.when(lambda order: order.complete("c1", total=Decimal("10"), payment_total=Decimal("0"),
                                                            reference=None, backordered=True))
    assert completed.shipment_state == "backorder"
    [changed] = history.when(lambda order: order.payments_changed(payment_total=Decimal("10"), any_valid=True))
    assert (changed.payment_state, changed.shipment_state) == ("paid", "backorder")


# -- what a basket may hold: the stock check GetCandy's basket lines ask the shipping service ---
def test_lines_beyond_the_units_on_hand_are_uncovered_unless_backorderable_or_untracked():
    levels = {1: s.StockLevel(total_on_hand=5), 2: s.StockLevel(total_on_hand=0, backorderable=True),
              3: s.StockLevel(total_on_hand=-2)}
    lines = [Line(1, 5, True), Line(1, 6, True), Line(2, 99, True), Line(3, 1, True), Line(3, 1, False),
             Line(4, 1, True), Line(4, 1, False)]
    # 5 of 5 on hand is covered, 6 is not; backorderable always; oversold (negative) covers
    # nothing; a variant stocked nowhere covers nothing but untracked needs no stock.
    assert uncovered(lines, levels) == [1, 3, 5]
    assert uncovered([], levels) == []
