"""Checks on untrusted input, without I/O: linear, bounded, failing closed."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest
from starlette.requests import Request

from services.gateway.solidus import access
from services.gateway.solidus.errors import ApiError
from services.payment.domain import InvalidPayment, parse_amount
from shared.jsonutil import dumps_with_numbers
from shared.validation import ascii_int, json_depth, valid_email


def request_with(headers: dict[str, str]) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/api/orders", "query_string": b"",
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]})


@pytest.mark.parametrize("configured", ["", None])
def test_admin_checks_fail_closed_without_a_configured_key(monkeypatch, configured):
    if configured is None:
        monkeypatch.delenv("TILLSTREAM_ADMIN_KEY", raising=False)
    else:
        monkeypatch.setenv("TILLSTREAM_ADMIN_KEY", configured)
    for sent in ("", "anything"):
        with pytest.raises(ApiError) as refused:
            access.is_admin(request_with({"Authorization": f"Bearer {sent}"}))
        assert (refused.value.status, refused.value.body) == (401, {"error": "Invalid API key specified."})
    assert access.is_admin(request_with({})) is False


def test_a_wrong_admin_key_is_refused_and_not_echoed(monkeypatch):
    monkeypatch.setenv("TILLSTREAM_ADMIN_KEY", "s3cret-admin-key")
    assert access.is_admin(request_with({"Authorization": "Bearer s3cret-admin-key"})) is True
    with pytest.raises(ApiError) as refused:
        access.is_admin(request_with({"Authorization": "Bearer s3cret-admin-kez"}))
    assert refused.value.body == {"error": "Invalid API key specified."}


def test_the_email_check_is_linear_and_as_strict_as_before():
    for good in ("ada@example.com", "a.b+c@d.e.f"):
        assert valid_email(good)
    for bad in ("", "ada", "ada@", "@x.y", "a@b", "a@.b", "a@b.", "a b@c.d", "a@b@c.d", "x" * 250 + "@a.bc", None, 5):
        assert not valid_email(bad), bad
    started = time.perf_counter()
    assert not valid_email("a@" + "." * 50_000 + "@")
    assert time.perf_counter() - started < 0.05


def test_ints_are_ascii_digits_only_and_bounded():
    assert [ascii_int(v) for v in (7, "7", " 42 ", "-3")] == [7, 7, 42, -3]
    assert [ascii_int(v) for v in ("²", "١٢", "1e3", "", "-", True, 1.5, None, "9" * 11)] == [None] * 9


def test_json_depth_is_counted_without_recursion_and_strings_do_not_count():
    assert json_depth("[" * 100_000 + "]" * 100_000) > 32
    assert json_depth('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "b": [1, {"c": 2}]}') == 3


def test_money_is_written_digit_for_digit_and_text_stays_text():
    body = {"total": Decimal("24.10"), "name": "__decimal__1.0__", "quote": '"x"', "list": [Decimal("-0.50")]}
    assert dumps_with_numbers(body) == (b'{"total":24.10,"name":"__decimal__1.0__","quote":"\\"x\\"",'
                                        b'"list":[-0.50]}')


@pytest.mark.parametrize("amount", ["9999999999.995", "10000000000", "1e400", "NaN", "Infinity", "1" * 40, True])
def test_amounts_that_do_not_fit_the_column_are_refused(amount):
    with pytest.raises(InvalidPayment):
        parse_amount(amount)
    assert parse_amount("9999999999.994") == Decimal("9999999999.99")
