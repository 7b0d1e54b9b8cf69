"""The Order aggregate's checkout rules, given its events, without a database: `next`'s
transitions and guards, the delivery request it waits on, `restart_checkout`, and
`validate_address`."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.order.addresses import Country, InvalidFields, validate_address
from services.order.domain import MISSING_BILLING, NO_ITEMS, Order
from shared.contracts import order as o
from shared.envelope import DomainEvent
from tests.helpers.aggregates import given, kinds

PORTLAND = o.Address(id=1, name="Ada Lovelace", address1="1 Main St", city="Portland", zipcode="97201",
                     country_id=232, country_iso="US", state_id=48)
LINES = [o.DeliveryLine(variant_id=1, quantity=2, track_inventory=True)]
US = Country(id=232, iso="US", states_required=True, state_ids=frozenset({48, 49}),
             state_names={"oregon": 48, "or": 48, "washington": 49, "wa": 49})
GB = Country(id=77, iso="GB", states_required=False, state_ids=frozenset(), state_names={})


def created() -> o.OrderCreated:
    return o.OrderCreated(number="R1", guest_token_digest=o.guest_token_digest("tok"), currency="USD")


def advanced(from_state: str, to_state: str) -> o.CheckoutAdvanced:
    return o.CheckoutAdvanced(number="R1", from_state=from_state, to_state=to_state)


def ready_to_leave_address(*events: DomainEvent):
    """In `address` with an email and a ship address."""
    return given(Order, "R1", created(), advanced("cart", "address"),
                 o.OrderEmailChanged(number="R1", email="ada@example.com"),
                 o.ShipAddressChanged(number="R1", address=PORTLAND), *events)


def delivery_requested(request_id: str = "d1") -> o.DeliveryRequested:
    return o.DeliveryRequested(number="R1", request_id=request_id, ship_address=PORTLAND, currency="USD", lines=LINES)


def step(item_count: int = 1, total: str = "10", shipments_ready: bool = True, **kwargs):
    return lambda order: order.next(item_count=item_count, total=Decimal(total), shipments_ready=shipments_ready,
                                    **kwargs)


# -- next: cart → address -------------------------------------------------------------------
def test_a_cart_with_items_moves_to_address():
    history = given(Order, "R1", created())
    assert history.when(step(item_count=2)) == [advanced("cart", "address")]
    assert history.load().state == "address"


def test_a_cart_without_items_is_refused():
    refused = given(Order, "R1", created()).refuses(step(item_count=0))
    assert refused.code == "could_not_transition" and refused.errors == {"base": [NO_ITEMS]}


# -- next: leaving address asks shipping for delivery -----------------------------------------
def test_leaving_address_requests_delivery_and_stays_in_address_until_it_is_answered():
    history = ready_to_leave_address()
    [requested] = history.when(step(lines=LINES))
    assert isinstance(requested, o.DeliveryRequested)
    assert (requested.ship_address, requested.lines, requested.currency) == (PORTLAND, LINES, "USD")
    order = history.load()
    assert order.state == "address" and order.pending_delivery == requested.request_id
    # No other step slips in while shipping has not answered.
    assert history.refuses(step()).errors == {}
    assert history.when(lambda order: order.delivery_arrived("another request")) == []
    assert history.when(lambda order: order.delivery_arrived(requested.request_id)) == [
        advanced("address", "delivery")]
    assert history.load().pending_delivery is None


def test_a_refused_delivery_lets_the_customer_try_again():
    history = ready_to_leave_address(delivery_requested("d1"))
    refused = history.when(lambda order: order.delivery_refused("d1", "no_rates", "none"))
    assert kinds(refused) == [o.DeliveryRefused] and refused[0].code == "no_rates"
    assert history.load().state == "address"
    assert history.when(lambda order: order.delivery_refused("d1", "no_rates", "none")) == []  # answered once
    assert kinds(history.when(step())) == [o.DeliveryRequested]


@pytest.mark.parametrize("missing, errors", [
    ("email", {"email": ["can't be blank"]}),
    ("ship address", {"base": ["Valid shipping address required"]}),
    ("both", {"email": ["can't be blank"], "base": ["Valid shipping address required"]}),
])
def test_leaving_address_needs_an_email_and_a_ship_address(missing, errors):
    events = [created(), advanced("cart", "address")]
    if missing == "ship address":
        events.append(o.OrderEmailChanged(number="R1", email="ada@example.com"))
    if missing == "email":
        events.append(o.ShipAddressChanged(number="R1", address=PORTLAND))
    assert given(Order, "R1", *events).refuses(step()).errors == errors


def test_getcandy_leaves_address_without_an_email():
    history = given(Order, "R1", created(), advanced("cart", "address"),
                    o.ShipAddressChanged(number="R1", address=PORTLAND))
    assert kinds(history.when(step(require_email=False))) == [o.DeliveryRequested]


# -- next: delivery → payment or confirm → (complete is not `next`'s) ---------------------------
def test_delivery_needs_shipments_with_rates():
    history = ready_to_leave_address(delivery_requested(), advanced("address", "delivery"))
    refused = history.refuses(step(shipments_ready=False))
    assert refused.errors == {"base": ["We are unable to calculate shipping rates for the selected items."]}


@pytest.mark.parametrize("total, to_state", [("0.01", "payment"), ("0", "confirm"), ("-1.00", "confirm")])
def test_delivery_moves_to_payment_only_when_there_is_something_to_pay(total, to_state):
    history = ready_to_leave_address(delivery_requested(), advanced("address", "delivery"))
    assert history.when(step(total=total)) == [advanced("delivery", to_state)]


def test_payment_moves_to_confirm_and_confirm_has_no_next():
    history = ready_to_leave_address(delivery_requested(), advanced("address", "delivery"),
                                     advanced("delivery", "payment"))
    assert history.when(step()) == [advanced("payment", "confirm")]
    assert history.refuses(step()).errors == {}  # `complete`, not `next`, leaves confirm


def test_a_completing_or_placed_order_takes_no_step():
    confirm = [created(), advanced("cart", "confirm")]
    requested = o.CompletionRequested(number="R1", request_id="c1", total=Decimal("10"), lines=[])
    assert given(Order, "R1", *confirm, requested).refuses(step()).code == "order_locked"
    completed = o.OrderCompleted(number="R1", request_id="c1", total=Decimal("10"), payment_total=Decimal("0"),
                                 payment_state="balance_due", shipment_state="pending")
    assert given(Order, "R1", *confirm, requested, completed).refuses(step()).code == "order_placed"
    canceled = o.OrderCanceled(number="R1", completion_request_id="c1")
    assert given(Order, "R1", *confirm, requested, completed, canceled).refuses(step()).code == "order_placed"


# -- check_processable: GetCandy's `process` guards ------------------------------------------------
BILLING = o.Address(id=2, name="Ada Lovelace", firstname="Ada", lastname="Lovelace", address1="1 High St",
                    city="London", zipcode="N1 1AA", country_id=77, country_iso="GB")


def test_an_order_with_its_billing_address_may_be_processed_from_any_step_before_placed():
    for state in ("cart", "address", "delivery", "payment", "confirm"):
        history = given(Order, "R1", created(), advanced("cart", state), o.BillAddressChanged(number="R1",
                                                                                              address=BILLING))
        assert history.when(lambda order: order.check_processable()) == []


@pytest.mark.parametrize("missing", ["firstname", "lastname", "address1", "city", "zipcode"])
def test_processing_needs_every_billing_field_getcandy_asks_for(missing):
    partial = BILLING.model_copy(update={missing: None if missing in ("firstname", "lastname") else ""})
    history = given(Order, "R1", created(), advanced("cart", "delivery"),
                    o.BillAddressChanged(number="R1", address=partial))
    refusal = history.refuses(lambda order: order.check_processable())
    assert (refusal.code, refusal.status, refusal.message) == ("billing_missing", 403, MISSING_BILLING)
    no_billing = given(Order, "R1", created(), advanced("cart", "delivery"))
    assert no_billing.refuses(lambda order: order.check_processable()).code == "billing_missing"


def test_a_placed_or_canceled_order_was_processed_already_whatever_its_billing():
    confirm = [created(), advanced("cart", "confirm")]
    requested = o.CompletionRequested(number="R1", request_id="c1", total=Decimal("10"), lines=[])
    completed = o.OrderCompleted(number="R1", request_id="c1", total=Decimal("10"), payment_total=Decimal("0"),
                                 payment_state="balance_due", shipment_state="pending")
    placed = given(Order, "R1", *confirm, requested, completed)
    assert placed.refuses(lambda order: order.check_processable()).code == "order_placed"
    canceled = given(Order, "R1", *confirm, o.BillAddressChanged(number="R1", address=BILLING), requested, completed,
                     o.OrderCanceled(number="R1", completion_request_id="c1"))
    assert canceled.refuses(lambda order: order.check_processable()).code == "order_placed"


# -- restart_checkout: the cart changed ---------------------------------------------------------
@pytest.mark.parametrize("state", ["address", "delivery", "payment", "confirm"])
@pytest.mark.parametrize("has_items, back_to", [(True, "address"), (False, "cart")])
def test_a_cart_change_restarts_the_checkout_from_any_later_step(state, has_items, back_to):
    history = given(Order, "R1", created(), advanced("cart", state))
    assert history.when(lambda order: order.restart_checkout(has_items=has_items)) == [
        o.CheckoutRestarted(number="R1", state=back_to)]
    assert history.load().state == back_to


def test_a_restart_forgets_a_delivery_request_so_its_late_answer_moves_nothing():
    history = ready_to_leave_address(delivery_requested("d1"))
    history.when(lambda order: order.restart_checkout(has_items=True))
    assert history.load().pending_delivery is None
    assert history.when(lambda order: order.delivery_arrived("d1")) == []
    assert kinds(history.when(step())) == [o.DeliveryRequested]


def test_a_restart_names_the_delivery_request_whose_shipments_it_makes_stale():
    history = ready_to_leave_address(delivery_requested("d1"))
    history.when(lambda order: order.delivery_arrived("d1"))
    assert history.when(lambda order: order.restart_checkout(has_items=True)) == [
        o.CheckoutRestarted(number="R1", state="address", delivery_request_id="d1")]


def test_nothing_restarts_in_cart_while_completing_or_once_placed():
    assert given(Order, "R1", created()).when(lambda order: order.restart_checkout(has_items=True)) == []
    requested = o.CompletionRequested(number="R1", request_id="c1", total=Decimal("10"), lines=[])
    completing = given(Order, "R1", created(), advanced("cart", "confirm"), requested)
    assert completing.when(lambda order: order.restart_checkout(has_items=True)) == []
    completed = o.OrderCompleted(number="R1", request_id="c1", total=Decimal("10"), payment_total=Decimal("10"),
                                 payment_state="paid", shipment_state="ready")
    placed = given(Order, "R1", created(), advanced("cart", "confirm"), requested, completed)
    assert placed.when(lambda order: order.restart_checkout(has_items=True)) == []


# -- validate_address -----------------------------------------------------------------------------
ADA = {"name": " Ada Lovelace ", "address1": "1 Main St", "city": "Portland", "zipcode": 97201,
       "phone": "555-0100", "state_name": "oregon "}


def invalid(fields: dict, country: Country | None = US, **kwargs) -> dict[str, list[str]]:
    with pytest.raises(InvalidFields) as refused:
        validate_address("bill_address", fields, country, 7, **kwargs)
    return refused.value.errors


def test_a_valid_address_is_trimmed_and_its_state_found_by_name_or_abbreviation():
    address = validate_address("bill_address", ADA, US, 7)
    assert (address.id, address.name, address.zipcode, address.country_iso) == (7, "Ada Lovelace", "97201", "US")
    assert (address.state_id, address.state_name, address.address2) == (48, None, None)
    assert validate_address("x", {**ADA, "state_name": "WA"}, US, 8).state_id == 49
    assert validate_address("x", {**ADA, "state_name": None, "state_id": 49}, US, 8).state_id == 49


def test_a_country_without_states_keeps_the_state_name_as_given():
    address = validate_address("ship_address", {**ADA, "state_name": "Essex"}, GB, 9)
    assert (address.state_id, address.state_name) == (None, "Essex")


@pytest.mark.parametrize("field", ["name", "address1", "city", "zipcode", "phone"])
@pytest.mark.parametrize("blank", [None, "", "   "])
def test_every_required_field_must_be_filled(field, blank):
    assert invalid({**ADA, field: blank}) == {f"bill_address.{field}": ["can't be blank"]}


def test_getcandy_addresses_need_no_phone():
    assert validate_address("x", {**ADA, "phone": None}, US, 7, require_phone=False).phone is None


@pytest.mark.parametrize("value", [True, 1.5, ["Portland"], {"a": 1}])
def test_a_field_that_is_not_text_is_invalid_not_blank(value):
    assert invalid({**ADA, "city": value}) == {"bill_address.city": ["is invalid"]}
    assert invalid({**ADA, "company": value}) == {"bill_address.company": ["is invalid"]}


def test_a_field_longer_than_its_column_is_too_long():
    assert validate_address("x", {**ADA, "company": "c" * 255}, US, 7).company == "c" * 255
    assert invalid({**ADA, "company": "c" * 256}) == {
        "bill_address.company": ["is too long (maximum is 255 characters)"]}


def test_the_country_and_the_state_it_requires():
    assert invalid(ADA, country=None) == {"bill_address.country": ["can't be blank"]}
    assert invalid({**ADA, "state_name": "ZZ"}) == {"bill_address.state": ["can't be blank"]}
    assert invalid({**ADA, "state_name": None}) == {"bill_address.state": ["can't be blank"]}
    assert invalid({**ADA, "state_id": 12}) == {"bill_address.state": ["is invalid"]}  # another country's
    assert invalid({**ADA, "state_id": 12}, country=GB) == {"bill_address.state": ["is invalid"]}


def test_every_error_is_reported_at_once():
    errors = invalid({"name": "", "address1": 5 * [1], "city": "c" * 300, "state_name": "nowhere"})
    assert errors == {"bill_address.name": ["can't be blank"], "bill_address.address1": ["is invalid"],
                      "bill_address.city": ["is too long (maximum is 255 characters)"],
                      "bill_address.zipcode": ["can't be blank"], "bill_address.phone": ["can't be blank"],
                      "bill_address.state": ["can't be blank"]}
