"""The completion saga's step operations (shared/steps.py), called as the order service calls
them (its key, over the participants' bus routes): idempotent by saga id and step. A repeated
call answers the first answer's stored events and has no second effect (stock taken once, one
charge at the gateway, one coupon reservation); calls at once have one effect and one answer;
a step called after its undo does nothing and answers nothing."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg

from tests.helpers.solidus import V1, full_flow, stock_of

LINES = [{"variant_id": V1, "quantity": 1, "track_inventory": True}]


def ids(reply: dict) -> list[str]:
    return [event["event_id"] for event in reply["events"]]


def types(reply: dict) -> list[str]:
    return [event["type"] for event in reply["events"]]


async def confirmed_order(gateway, single_use_coupon) -> tuple[str, str]:
    """An order in `confirm` with a single-use coupon (reserved by a lock) and a card payment."""
    code, _ = single_use_coupon()
    number, _, total, _ = await full_flow(gateway, card={"number": "4111111111111111", "month": 12, "year": 2030,
                                                         "verification_value": "123", "name": "A B"},
                                          coupon=code, complete=False)
    return number, total


async def effects(stack, number: str) -> tuple[int, int]:
    """The order's coupon reservations and the gateway calls made for its payments."""
    conn = await asyncpg.connect(stack.database_url)
    try:
        uses = await conn.fetchval("SELECT count(*) FROM cart.promotion_uses WHERE order_number = $1", number)
        calls = await conn.fetchval("SELECT count(*) FROM payment.gateway_calls WHERE idempotency_key LIKE $1",
                                    f"{number}-%")
        return uses, calls
    finally:
        await conn.close()


def step(system, service: str, operation: str):
    async def call(number: str, **arguments):
        return await system.acall(service, operation, as_caller="order", number=number, **arguments)
    return call


async def test_each_step_twice_answers_the_first_answer_with_one_effect(stack, system, gateway, single_use_coupon):
    number, total = await confirmed_order(gateway, single_use_coupon)
    saga_id = str(uuid.uuid4())
    stock = await stock_of(stack, V1)

    first = await step(system, "cart", "lock_cart")(number, saga_id=saga_id, lines=LINES)
    assert types(first) == ["cart.CartLocked"]
    assert (await step(system, "cart", "lock_cart")(number, saga_id=saga_id, lines=LINES)) == first

    allocated = await step(system, "shipping", "allocate_stock")(number, saga_id=saga_id, lines=LINES)
    assert types(allocated) == ["shipping.StockAllocated"]
    assert ids(await step(system, "shipping", "allocate_stock")(number, saga_id=saga_id, lines=LINES)) \
        == ids(allocated)
    assert await stock_of(stack, V1) == stock - 1

    processed = await step(system, "payment", "process_payments")(number, saga_id=saga_id, amount=total)
    assert types(processed) == ["payment.PaymentsProcessed"]
    assert ids(await step(system, "payment", "process_payments")(number, saga_id=saga_id, amount=total)) \
        == ids(processed)
    assert await effects(stack, number) == (1, 1)

    # Undone, each twice: the undo answers once; the step, called again, still answers its
    # first answer and does nothing more.
    for service, undo, answer in (("payment", "void_payments", "payment.PaymentsVoided"),
                                  ("shipping", "release_stock", "shipping.StockReleased"),
                                  ("cart", "unlock_cart", "cart.CartUnlocked")):
        undone = await step(system, service, undo)(number, saga_id=saga_id)
        assert types(undone) == [answer]
        assert ids(await step(system, service, undo)(number, saga_id=saga_id)) == ids(undone)
    assert await stock_of(stack, V1) == stock
    assert ids(await step(system, "cart", "lock_cart")(number, saga_id=saga_id, lines=LINES)) == ids(first)
    assert ids(await step(system, "shipping", "allocate_stock")(number, saga_id=saga_id, lines=LINES)) \
        == ids(allocated)
    assert await stock_of(stack, V1) == stock
    assert (await effects(stack, number))[0] == 0


async def test_calls_at_once_have_one_effect_and_one_answer(stack, system, gateway, single_use_coupon):
    number, total = await confirmed_order(gateway, single_use_coupon)
    saga_id = str(uuid.uuid4())
    stock = await stock_of(stack, V1)

    async def five(service: str, operation: str, **arguments) -> list[str]:
        replies = await asyncio.gather(*(step(system, service, operation)(number, saga_id=saga_id, **arguments)
                                         for _ in range(5)))
        assert all(len(reply["events"]) == 1 for reply in replies), replies
        assert len({tuple(ids(reply)) for reply in replies}) == 1, replies
        return types(replies[0])

    assert await five("cart", "lock_cart", lines=LINES) == ["cart.CartLocked"]
    assert await five("shipping", "allocate_stock", lines=LINES) == ["shipping.StockAllocated"]
    assert await five("payment", "process_payments", amount=total) == ["payment.PaymentsProcessed"]
    assert await stock_of(stack, V1) == stock - 1
    assert await effects(stack, number) == (1, 1)


async def test_a_step_called_after_its_undo_does_nothing(stack, system, gateway, single_use_coupon):
    number, total = await confirmed_order(gateway, single_use_coupon)
    saga_id = str(uuid.uuid4())
    stock = await stock_of(stack, V1)
    for service, undo, operation, arguments in (
            ("cart", "unlock_cart", "lock_cart", {"lines": LINES}),
            ("shipping", "release_stock", "allocate_stock", {"lines": LINES}),
            ("payment", "void_payments", "process_payments", {"amount": total})):
        assert len((await step(system, service, undo)(number, saga_id=saga_id))["events"]) == 1
        assert (await step(system, service, operation)(number, saga_id=saga_id, **arguments)) == {"events": []}
    assert await stock_of(stack, V1) == stock
    assert await effects(stack, number) == (0, 0)


async def test_a_lock_with_a_coupon_without_a_limit_reserves_it_in_the_carts_append(stack, system, gateway):
    """The lock's reservation of a coupon that no limit counts rides in the cart's append
    (`Alongside`, shared/steps.py `one_statement`): written once, with the lock, and only then."""
    number, _, _, _ = await full_flow(gateway, card={"number": "4111111111111111", "month": 12, "year": 2030,
                                                     "verification_value": "123", "name": "A B"},
                                      coupon="10off", complete=False)
    saga_id = str(uuid.uuid4())
    lock = step(system, "cart", "lock_cart")
    assert await effects(stack, number) == (0, 0)
    first = await lock(number, saga_id=saga_id, lines=LINES)
    assert types(first) == ["cart.CartLocked"] and (await effects(stack, number))[0] == 1
    assert await lock(number, saga_id=saga_id, lines=LINES) == first
    refused = await lock(number, saga_id=str(uuid.uuid4()), lines=LINES)  # locked already: refused
    assert types(refused) == ["cart.CartLockRefused"] and (await effects(stack, number))[0] == 1
