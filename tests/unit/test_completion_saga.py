"""The completion saga's decisions, without a database or a broker (Eventuate's
CreateOrderSagaTest style: given an answer, expect the next call)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from services.order.saga import COMPLETION
from shared.contracts import cart as c
from shared.contracts import payment as p
from shared.contracts import shipping as s
from shared.saga import COMPENSATING, COMPLETED, FAILED, RUNNING, Call, SagaInstance
from shared.settings import Settings

SETTINGS = Settings(saga_lock_cart_deadline_ms=1000, saga_stock_deadline_ms=2000, saga_payment_deadline_ms=3000,
                    saga_compensation_retry_ms=500, saga_step_retry_ms=100, saga_step_max_attempts=3)
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
LINES = [{"variant_id": 1, "quantity": 2, "track_inventory": True}]


def started(tax_rate: str = "0") -> tuple[SagaInstance, list]:
    saga = SagaInstance(id="req-1", saga="completion", key="R000000001", correlation_id="corr",
                        data={"lines": LINES, "tax_rate": tax_rate})
    return saga, COMPLETION.begin(saga, SETTINGS, NOW).calls


def locked(item_total="39.98", adjustment_total="-10.00") -> c.CartLocked:
    return c.CartLocked(order_number="R000000001", request_id="req-1", item_total=Decimal(item_total),
                        adjustment_total=Decimal(adjustment_total),
                        lines=[c.LockedLine(line_item_id=7, variant_id=1, quantity=2, price=Decimal("19.99"),
                                            track_inventory=True)])


def allocated(ship_total="10.00") -> s.StockAllocated:
    return s.StockAllocated(order_number="R000000001", request_id="req-1", ship_total=Decimal(ship_total),
                            units=[s.AllocatedUnit(stock_location_id=1, variant_id=1, quantity=2)])


def answer(saga: SagaInstance, event, at: datetime = NOW):
    return COMPLETION.answered(saga, event, SETTINGS, at)


def test_it_starts_by_locking_the_cart_for_the_confirmed_lines():
    saga, calls = started()
    assert calls == [Call("lock_cart", arguments={"lines": LINES})]
    assert (saga.status, saga.invoked, saga.deadline_at) == (RUNNING, ["lock_cart"], NOW + timedelta(seconds=1))
    assert saga.retry_at == NOW + timedelta(milliseconds=100)


def test_each_answer_calls_the_next_step_with_what_the_steps_learnt():
    saga, _ = started(tax_rate="0.20")
    decision = answer(saga, locked())
    assert decision.calls == [Call("allocate_stock", arguments={"lines": LINES})]
    assert saga.deadline_at == NOW + timedelta(seconds=2)
    decision = answer(saga, allocated())
    # The locked total: 39.98 - 10.00 + 10.00 shipping, and 20% tax on each part, truncated.
    assert decision.calls == [Call("process_payments", arguments={
        "amount": str(Decimal("39.98") + Decimal("5.99") + Decimal("2.00"))})]
    decision = answer(saga, p.PaymentsProcessed(order_number="R000000001", request_id="req-1",
                                                payment_total=Decimal("0")))
    assert decision.local is COMPLETION.step_named("place_order") and not decision.calls
    assert COMPLETION.after_local(saga, SETTINGS, NOW).finished == COMPLETED and saga.status == COMPLETED


def test_nothing_to_pay_goes_from_stock_to_the_pivot():
    saga, _ = started()
    answer(saga, locked(item_total="25.00", adjustment_total="-25.00"))
    decision = answer(saga, allocated(ship_total="0"))
    assert decision.local is COMPLETION.step_named("place_order")
    assert saga.invoked == ["lock_cart", "allocate_stock"]


def test_a_failure_undoes_every_step_taken_the_failing_one_included_and_ends_when_all_answered():
    saga, _ = started()
    answer(saga, locked())
    answer(saga, allocated())
    decision = answer(saga, p.PaymentsDeclined(order_number="R000000001", request_id="req-1",
                                               message="Bogus Gateway: Forced failure"))
    assert decision.calls == [Call("process_payments", undo=True), Call("allocate_stock", undo=True),
                              Call("lock_cart", undo=True)]
    assert saga.status == COMPENSATING and saga.failure.state == "payment" and saga.failure.code == "payment_failed"
    for undone in (s.StockReleased(order_number="R000000001", request_id="req-1", units=[]),
                   c.CartUnlocked(order_number="R000000001", request_id="req-1")):
        assert answer(saga, undone).finished is None
    done = answer(saga, p.PaymentsVoided(order_number="R000000001", request_id="req-1", payment_ids=[3]))
    assert done.finished == FAILED and saga.status == FAILED and saga.deadline_at is None


@pytest.mark.parametrize("refusal, state", [("cart_changed", "address"), ("promotions_ineligible", "address")])
def test_a_refused_lock_restarts_the_checkout(refusal, state):
    saga, _ = started()
    decision = answer(saga, c.CartLockRefused(order_number="R000000001", request_id="req-1", code=refusal,
                                              message="m", item_count=1))
    assert decision.calls == [Call("lock_cart", undo=True)]
    assert (saga.failure.code, saga.failure.state) == (refusal, state)


def test_answers_that_do_not_fit_change_nothing():
    saga, _ = started()
    answer(saga, locked())
    assert answer(saga, locked()) is None  # a duplicate of the step already passed
    assert answer(saga, c.CartUnlocked(order_number="R000000001", request_id="req-1")) is None  # not compensating
    answer(saga, s.StockAllocationFailed(order_number="R000000001", request_id="req-1", message="short"))
    assert saga.status == COMPENSATING and saga.failure.code == "insufficient_stock"
    # A late success of the failed step, while compensating, is not taken.
    assert answer(saga, allocated()) is None and saga.status == COMPENSATING


def test_a_missed_deadline_compensates_and_an_unanswered_compensation_is_sent_again():
    saga, _ = started()
    answer(saga, locked())
    answer(saga, allocated())
    decision = COMPLETION.expired(saga, SETTINGS, NOW + timedelta(seconds=4))
    assert saga.failure.code == "payment_timed_out" and saga.failure.state == "payment"
    assert decision.calls == [Call("process_payments", undo=True), Call("allocate_stock", undo=True),
                              Call("lock_cart", undo=True)]
    answer(saga, c.CartUnlocked(order_number="R000000001", request_id="req-1"))
    again = COMPLETION.expired(saga, SETTINGS, NOW + timedelta(seconds=5))
    assert again.calls == [Call("process_payments", undo=True), Call("allocate_stock", undo=True)]
    assert saga.attempts == 1 and saga.deadline_at == NOW + timedelta(seconds=6)


def test_an_operators_abort_fails_the_step_as_aborted():
    saga, _ = started()
    saga.abort_requested = True
    COMPLETION.expired(saga, SETTINGS, NOW)
    assert (saga.failure.code, saga.failure.state, saga.status) == ("aborted", "confirm", COMPENSATING)


def test_a_forced_end_fails_a_compensating_saga_naming_the_compensations_left_unanswered():
    saga, _ = started()
    answer(saga, locked())
    COMPLETION.expired(saga, SETTINGS, NOW + timedelta(seconds=3))  # the stock step timed out
    answer(saga, c.CartUnlocked(order_number="R000000001", request_id="req-1"))
    saga.force_requested = True
    decision = COMPLETION.expired(saga, SETTINGS, NOW + timedelta(seconds=4))
    assert decision.finished == FAILED and decision.calls == [] and saga.status == FAILED
    assert (saga.failure.code, saga.failure.unanswered, saga.pending) == ("step_timed_out", ("allocate_stock",), [])
    assert answer(saga, s.StockReleased(order_number="R000000001", request_id="req-1", units=[])) is None  # too late


def test_a_call_that_keeps_failing_fails_its_step_at_once():
    saga, _ = started()
    answer(saga, locked())
    stock = Call("allocate_stock", arguments={"lines": LINES})
    assert COMPLETION.call_failed(saga, Call("lock_cart"), "x", SETTINGS, NOW) is None  # not the current step
    for attempt in (1, 2):
        assert COMPLETION.call_failed(saga, stock, "ValueError: boom", SETTINGS, NOW).calls == []
        assert saga.status == RUNNING and saga.call_attempts == attempt
        assert saga.retry_at == NOW + timedelta(milliseconds=100)
    decision = COMPLETION.call_failed(saga, stock, "ValueError: boom", SETTINGS, NOW)
    assert saga.failure.code == "step_failed" and saga.failure.message == "The allocate_stock step failed:" \
        " ValueError: boom" and saga.failure.state == "confirm"
    assert decision.calls == [Call("allocate_stock", undo=True), Call("lock_cart", undo=True)]
    # An undo that fails is called again until answered: it fails nothing.
    assert COMPLETION.call_failed(saga, Call("lock_cart", undo=True), "x", SETTINGS, NOW) is None


def test_a_reply_not_recorded_is_called_again_doubling_up_to_a_cap_until_the_deadline():
    saga, _ = started()
    calls = [COMPLETION.retried(saga, SETTINGS, NOW) for _ in range(7)]
    assert calls == [[Call("lock_cart", arguments={"lines": LINES})]] * 7
    assert saga.retry_at == NOW + timedelta(seconds=5)  # 100 ms * 2**7, capped
    answer(saga, locked())
    assert (saga.retries, saga.retry_at) == (0, NOW + timedelta(milliseconds=100))
    COMPLETION.retried(saga, SETTINGS, NOW)
    assert saga.retry_at == NOW + timedelta(milliseconds=200)
    COMPLETION.expired(saga, SETTINGS, NOW + timedelta(seconds=3))  # past the stock step's deadline
    assert saga.status == COMPENSATING
    assert COMPLETION.retried(saga, SETTINGS, NOW) == [Call("allocate_stock", undo=True), Call("lock_cart", undo=True)]


def test_the_saga_listens_to_every_answer_and_names_its_steps_after_the_interfaces():
    heard = {cls.event_type for cls in COMPLETION.listens_to()}
    assert {"cart.CartLocked", "cart.CartUnlocked", "shipping.StockReleased", "payment.PaymentsRefused"} <= heard
    assert not {name for name in heard if name.endswith("MessageDeadLettered")}
    assert COMPLETION.participants == ("cart", "shipping", "payment")
    assert [(step.name, step.participant, step.interface) for step in COMPLETION.steps] == [
        ("lock_cart", "cart", "CartService"), ("allocate_stock", "shipping", "ShippingService"),
        ("process_payments", "payment", "PaymentService"), ("place_order", "order", "")]
