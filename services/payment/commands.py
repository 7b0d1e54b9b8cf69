"""Application handlers of the payment service."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg

from services.payment.context import PaymentContext
from services.payment.domain import InvalidPayment, OrderPayments, PaymentMethod, parse_amount, validate_card
from services.payment.gateway import card_for_token
from shared.aggregate import CommandResult, DomainError, not_found
from shared.contracts.payment import CardSource
from shared.eventstore import Alongside
from shared.faults import crash_point, fail_point, hold_point
from shared.ids import next_id
from shared.validation import ascii_int


async def find_method(ctx: PaymentContext, method_id: Any) -> PaymentMethod:
    """An active payment method users may choose: reference data, read through the service's
    `ReferenceCache` (shared/reference_cache.py), as is every payment method's auto-capture."""
    method_id = ascii_int(method_id)
    if method_id is None or not 0 < method_id < 2**31:
        raise not_found("payment method")

    async def load() -> PaymentMethod | None:
        row = await ctx.pool.fetchrow("SELECT id, name, method_type, auto_capture FROM payment_methods"
                                      " WHERE id = $1 AND active AND available_to_users", method_id)
        return None if row is None else PaymentMethod(**dict(row))

    method = await ctx.reference.read(("method", method_id), ("payment_methods",), load)
    if method is None:
        raise not_found("payment method")
    return method


async def auto_capture_methods(ctx: PaymentContext, conn: asyncpg.Connection) -> frozenset[int]:
    """The ids of the payment methods that capture as they authorise (read on `conn` if read)."""
    async def load() -> frozenset[int]:
        return frozenset(r["id"] for r in await conn.fetch("SELECT id FROM payment_methods WHERE auto_capture"))

    return await ctx.reference.read(("auto-capture methods",), ("payment_methods",), load)


async def token_of(conn: asyncpg.Connection | asyncpg.Pool, source: CardSource | None) -> str:
    """The gateway's token for a payment's card ("" for a payment with no card)."""
    if source is None:
        return ""
    return await conn.fetchval("SELECT gateway_token FROM card_sources WHERE card_id = $1", source.id) or ""


async def create_payment(ctx: PaymentContext, number: str, *, payment_method_id: Any, amount: Any, source: Any,
                         error_prefix: str = "", first: bool = False) -> CommandResult[OrderPayments]:
    """`first`: the caller's view of the order shows no payment, so its payments' stream is
    taken to be new (not read; a stream that exists after all conflicts, and is read then)."""
    method = await find_method(ctx, payment_method_id)
    value = parse_amount(amount)
    card = None
    if method.method_type == "gateway":
        if not isinstance(source, dict) or not source:
            raise InvalidPayment({f"{error_prefix}source": ["can't be blank"]})
        if "payment_token" in source:  # a storefront's tokenised card (GetCandy's payment_token)
            source = card_for_token(source["payment_token"])
        details = validate_card(source, f"{error_prefix}{method.name}")
        token = await ctx.gateway.tokenise(details.number)
        card_id = await next_id(ctx.pool, "card_ids")
        card = CardSource(id=card_id, month=details.month, year=details.year, cc_type=details.cc_type,
                          last_digits=details.number[-4:], name=details.name)
    payment_id = await next_id(ctx.pool, "payment_ids")

    # The token charges the card: kept here, never in an event (PaymentCreated.v2), and only
    # with the payment that uses it (in the append's statement: a refused payment leaves none).
    keep_card_token = Alongside("INSERT INTO card_sources (card_id, gateway_token) VALUES ($1, $2)",
                                (card.id, token)) if card else None
    return await ctx.payments.execute(ctx.pool, number, lambda payments: payments.create(
        payment_id=payment_id, method=method, amount=value, source=card), project=keep_card_token, new=first)


async def process_payments(ctx: PaymentContext, conn: asyncpg.Connection, number: str, request_id: str,
                           amount: Decimal) -> None:
    """Saga step 3: authorise (or purchase, for auto-capture methods) until the amount is
    covered. Its one write is the append (shared/steps.py `one_statement`: no transaction held
    open while the gateway answers); the gateway's own ledger sits outside it, and each call's
    idempotency key is the payment's number and action, so a redelivered or retried step never
    charges twice."""
    fail_point("payment.process_payments")
    await hold_point("payment.process_payments")
    # Read, never the trusted state (Repository.run): on a state behind the stream it would call
    # the gateway for a payment invalidated or voided meanwhile, which no rollback undoes.
    payments = await ctx.payments.load(conn, number)
    if payments.refuse_unless_covering(request_id, amount):
        await ctx.payments.save(conn, payments)
        return
    auto_capture = await auto_capture_methods(ctx, conn)
    covered, declined = Decimal("0"), None
    for payment in payments.to_process():
        if covered >= amount:
            break
        capture = payment.method_id in auto_capture
        action = "purchase" if capture else "authorize"
        result = await ctx.gateway.call(action, gateway_token=await token_of(conn, payment.source),
                                        amount=payment.amount, idempotency_key=f"{number}-{payment.number}-{action}")
        crash_point("payment.after_gateway_call")  # the gateway charged; our record is not committed
        payments.record_gateway_result(payment.id, captured=capture, success=result.success,
                                       authorization=result.authorization, message=result.message)
        if not result.success:
            declined = result.message
            break
        covered += payment.amount
    payments.conclude(request_id, declined)
    await ctx.payments.save(conn, payments)


async def void_payments(ctx: PaymentContext, conn: asyncpg.Connection, number: str, request_id: str) -> None:
    """Compensation of step 3: void at the gateway what the failed completion authorised or
    captured (a card payment still in `checkout` only if the gateway has a charge for it:
    the step may have died between the gateway's answer and our record)."""
    payments = await ctx.payments.load(conn, number)
    if request_id in payments.voided_requests:
        return
    voided = []
    for payment in payments.to_void():
        key = f"{number}-{payment.number}"
        if payment.state == "checkout" and not await ctx.gateway.charged(f"{key}-authorize", f"{key}-purchase"):
            continue
        await ctx.gateway.call("void", gateway_token=await token_of(conn, payment.source),
                           amount=payment.amount, idempotency_key=f"{key}-void")
        voided.append(payment.id)
    payments.voided_for(request_id, voided)
    await ctx.payments.save(conn, payments)


async def _gateway_action(ctx: PaymentContext, number: str, payment_id: int, action: str):
    payments = await ctx.payments.load(ctx.pool, number)
    payment = payments.check_capturable(payment_id) if action == "capture" else payments.find(payment_id)
    if action == "void":
        payments.check_voidable(payment_id)
    result = await ctx.gateway.call(action, gateway_token=await token_of(ctx.pool, payment.source),
                                    amount=payment.amount, idempotency_key=f"{number}-{payment.number}-{action}")
    if not result.success:
        raise DomainError("gateway_error", result.message or "failed")
    return result


async def capture(ctx: PaymentContext, number: str, payment_id: int) -> CommandResult:
    """Admin: capture an authorised payment (idempotent at the gateway), or record that a
    check's money arrived (which also keeps its order from being released unpaid)."""
    if (await ctx.payments.load(ctx.pool, number)).check_capturable(payment_id).method_type == "check":
        return await ctx.payments.execute(ctx.pool, number, lambda p: p.captured(payment_id, ""))
    result = await _gateway_action(ctx, number, payment_id, "capture")
    return await ctx.payments.execute(ctx.pool, number, lambda p: p.captured(payment_id, result.authorization or ""))


async def void(ctx: PaymentContext, number: str, payment_id: int) -> CommandResult:
    if (await ctx.payments.load(ctx.pool, number)).find(payment_id).method_type == "gateway":
        await _gateway_action(ctx, number, payment_id, "void")
    return await ctx.payments.execute(ctx.pool, number, lambda p: p.voided(payment_id))


async def settle_cancellation(ctx: PaymentContext, conn: asyncpg.Connection, number: str) -> None:
    """A canceled order: void what was authorised, refund what was captured."""
    payments = await ctx.payments.load(conn, number)
    for payment in list(payments.payments.values()):
        key = f"{number}-{payment.number}"
        if payment.state in ("pending", "checkout"):
            if payment.source is not None:
                await ctx.gateway.call("void", gateway_token=await token_of(conn, payment.source),
                                       amount=payment.amount, idempotency_key=f"{key}-void")
            payments.voided(payment.id)
        elif payment.state == "completed":
            await ctx.gateway.call("refund", gateway_token=await token_of(conn, payment.source),
                               amount=payment.amount, idempotency_key=f"{key}-refund")
            payments.refunded(payment.id)
    await ctx.payments.save(conn, payments)
