"""The payment service's rules, given its events, without a database: `validate_card`
(Solidus's card validations), what a gateway's answer records, and how a completion's
payments are concluded."""
from __future__ import annotations

from decimal import Decimal

import pytest

from services.payment.domain import InvalidPayment, OrderPayments, PaymentMethod, validate_card
from shared.contracts import payment as p
from tests.helpers.aggregates import given, kinds

CARD = {"number": "4111111111111111", "month": 12, "year": 2030, "verification_value": "123", "name": "A B"}
CHECK = PaymentMethod(1, "Check", "check", auto_capture=False)


def created(payment_id: int, amount: str, method_type: str = "gateway") -> p.PaymentCreated:
    return p.PaymentCreated(order_number="R1", payment_id=payment_id, payment_number=f"P{payment_id}",
                            payment_method_id=2, payment_method_name="Credit Card", method_type=method_type,
                            amount=Decimal(amount))


def card_errors(source, key: str = "Credit Card") -> list[str]:
    with pytest.raises(InvalidPayment) as refused:
        validate_card(source, key)
    return refused.value.details["errors"][key]


# -- validate_card ----------------------------------------------------------------------------
def test_a_valid_card_keeps_only_the_digits_of_its_number():
    card = validate_card({**CARD, "number": " 4111-1111 1111 1111 "}, "Credit Card")
    assert (card.number, card.month, card.year, card.name, card.cc_type) == (
        "4111111111111111", 12, 2030, "A B", "visa")


@pytest.mark.parametrize("number, cc_type", [("5555555555554444", "master"), ("378282246310005", "american_express"),
                                             ("6011111111111117", "bogus"), (4111111111111111, "visa")])
def test_the_card_type_follows_the_first_digit(number, cc_type):
    assert validate_card({**CARD, "number": number}, "k").cc_type == cc_type


@pytest.mark.parametrize("number", [None, "", "no digits", "-" * 64 + "4111111111111111", True])
def test_a_number_without_digits_is_blank(number):
    # Only the first 64 characters are read: digits past a long prefix do not count.
    assert card_errors({**CARD, "number": number}) == ["Card Number can't be blank"]


@pytest.mark.parametrize("month", [0, 13, -1, "x", "", None, True, 1.5, "12345"])
def test_a_month_outside_1_to_12_is_not_a_number(month):
    assert card_errors({**CARD, "month": month}) == ["Month is not a number"]


@pytest.mark.parametrize("year", [0, 10000, "y", None, False, "20301"])
def test_a_year_outside_1_to_9999_is_not_a_number(year):
    assert card_errors({**CARD, "year": year}) == ["Year is not a number"]


@pytest.mark.parametrize("month, year", [(1, 1), ("12", "9999"), (" 7 ", "2031")])
def test_months_and_years_as_numbers_or_digit_strings(month, year):
    card = validate_card({**CARD, "month": month, "year": year}, "k")
    assert (card.month, card.year) == (int(month), int(year))


@pytest.mark.parametrize("expiry, month, year", [("12/30", 12, 2030), ("1 / 2031", 1, 2031), ("07/99", 7, 2099)])
def test_an_expiry_stands_in_for_a_missing_month_and_year(expiry, month, year):
    source = {k: v for k, v in CARD.items() if k not in ("month", "year")}
    card = validate_card({**source, "expiry": expiry}, "k")
    assert (card.month, card.year) == (month, year)


@pytest.mark.parametrize("expiry", ["12/30/1", "1230", "ab/cd", "13/30"])
def test_an_expiry_that_does_not_read_as_month_and_year(expiry):
    source = {k: v for k, v in CARD.items() if k not in ("month", "year")}
    errors = card_errors({**source, "expiry": expiry})
    assert "Month is not a number" in errors and set(errors) <= {"Month is not a number", "Year is not a number"}


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_verification_value_is_required(value):
    assert card_errors({**CARD, "verification_value": value}) == ["Verification Value can't be blank"]


@pytest.mark.parametrize("source", [None, "4111111111111111", ["4111111111111111"], {}])
def test_a_source_that_is_not_a_card_gets_every_message_under_its_key(source):
    assert card_errors(source, key="payments.Credit Card") == [
        "Card Number can't be blank", "Month is not a number", "Year is not a number",
        "Verification Value can't be blank"]


def test_the_name_or_first_and_last_names():
    without_name = {k: v for k, v in CARD.items() if k != "name"}
    assert validate_card(without_name, "k").name is None
    assert validate_card({**without_name, "first_name": "Ada", "last_name": "Lovelace"}, "k").name == "Ada Lovelace"
    assert validate_card({**without_name, "last_name": "Lovelace", "first_name": 7}, "k").name == "Lovelace"
    for bad in ("n" * 256, 5, ["Ada"]):
        assert card_errors({**CARD, "name": bad}) == ["Name is invalid"]


# -- record_gateway_result --------------------------------------------------------------------
@pytest.mark.parametrize("captured, event, state", [(True, p.PaymentCaptured, "completed"),
                                                     (False, p.PaymentAuthorized, "pending")])
def test_an_approved_payment_is_authorised_or_captured_for_its_amount(captured, event, state):
    history = given(OrderPayments, "R1", created(1, "42.49"))
    recorded = history.when(lambda payments: payments.record_gateway_result(
        1, captured=captured, success=True, authorization="AUTH-1", message=None))
    assert recorded == [event(order_number="R1", payment_id=1, amount=Decimal("42.49"), authorization="AUTH-1")]
    assert history.load().payments[1].state == state
    no_code = given(OrderPayments, "R1", created(1, "42.49")).when(lambda payments: payments.record_gateway_result(
        1, captured=captured, success=True, authorization=None, message=None))
    assert no_code[0].authorization == ""


@pytest.mark.parametrize("message, recorded", [("Bogus Gateway: Forced failure", "Bogus Gateway: Forced failure"),
                                               (None, "failed")])
def test_a_declined_payment_fails_with_the_gateways_message(message, recorded):
    history = given(OrderPayments, "R1", created(1, "42.49"))
    assert history.when(lambda payments: payments.record_gateway_result(
        1, captured=False, success=False, authorization=None, message=message)) == [
        p.PaymentFailed(order_number="R1", payment_id=1, message=recorded)]
    assert history.load().payments[1].state == "failed"


# -- conclude ---------------------------------------------------------------------------------
def test_processed_payments_total_what_was_captured_and_place_the_order():
    history = given(OrderPayments, "R1", created(1, "10.00"), created(2, "5.00"), created(3, "2.50", "check"),
                    p.PaymentCaptured(order_number="R1", payment_id=1, amount=Decimal("10.00"), authorization="a"),
                    p.PaymentAuthorized(order_number="R1", payment_id=2, amount=Decimal("5.00"), authorization="b"))
    assert history.when(lambda payments: payments.conclude("c1", None)) == [
        p.PaymentsProcessed(order_number="R1", request_id="c1", payment_total=Decimal("10.00"),
                            secured_total=Decimal("15.00"))]
    payments = history.load()
    assert payments.closed and "c1" in payments.concluded
    assert history.refuses(lambda payments: payments.create(payment_id=4, method=CHECK, amount=Decimal("1"),
                                                            source=None)).code == "order_placed"
    # Answered: the step is not run again for this completion.
    assert history.when(lambda payments: payments.refuse_unless_covering("c1", Decimal("99"))) == []
    assert history.result is True


def test_declined_payments_are_concluded_without_placing_the_order():
    history = given(OrderPayments, "R1", created(1, "10.00"),
                    p.PaymentFailed(order_number="R1", payment_id=1, message="declined"))
    assert history.when(lambda payments: payments.conclude("c1", "Bogus Gateway: Forced failure - authorize")) == [
        p.PaymentsDeclined(order_number="R1", request_id="c1", message="Bogus Gateway: Forced failure - authorize")]
    payments = history.load()
    assert "c1" in payments.concluded and not payments.closed
    assert kinds(history.when(lambda payments: payments.refuse_unless_covering("c1", Decimal("10.00")))) == []


def test_a_processed_completion_that_was_voided_reopens_the_order_to_new_payments():
    history = given(OrderPayments, "R1", created(1, "10.00"),
                    p.PaymentCaptured(order_number="R1", payment_id=1, amount=Decimal("10.00"), authorization="a"),
                    p.PaymentsProcessed(order_number="R1", request_id="c1", payment_total=Decimal("10.00")))
    assert history.load().closed
    history.when(lambda payments: payments.voided_for("c1", [1]))
    assert not history.load().closed
    assert history.load().payments[1].state == "void"
