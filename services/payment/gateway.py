"""Payment gateways.

`BogusGateway` is Solidus's test gateway: 4111111111111111 (or "1") succeeds with
authorization 12345; any other number fails with "Bogus Gateway: Forced failure". Like a
real one, it tokenises a card when the payment is entered and never sees its number
again: it keeps the token, the last four digits and whether the card authorises (no card
number is stored anywhere). It keeps its own ledger on a separate connection (outside the
caller's transaction, like a remote gateway), keyed by idempotency key: a call retried
after a crash returns the first outcome and never charges twice.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

SUCCESS_NUMBERS = {"4111111111111111", "4242424242424242", "1"}


# The test gateway's client-side tokens: what a storefront's payment form would return.
TEST_TOKENS = {"tok_ok": "4111111111111111", "tok_declined": "4000000000000002"}


def card_for_token(token: object) -> dict:
    from shared.aggregate import DomainError

    number = TEST_TOKENS.get(token) if isinstance(token, str) else None
    if number is None:
        raise DomainError("invalid_token", "The payment token is invalid")
    return {"number": number, "month": 12, "year": 2099, "verification_value": "000", "name": None}




@dataclass(frozen=True)
class GatewayResult:
    success: bool
    authorization: str | None
    message: str | None


class BogusGateway:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def tokenise(self, number: str) -> str:
        """The card's token at the gateway; the number goes no further than this call."""
        token = "tok_" + secrets.token_hex(12)
        await self.pool.execute("INSERT INTO card_tokens (gateway_token, last_digits, approves) VALUES ($1, $2, $3)",
                                token, number[-4:], number in SUCCESS_NUMBERS)
        return token

    async def charged(self, *idempotency_keys: str) -> bool:
        """Whether a call under one of these keys authorised or captured money."""
        return bool(await self.pool.fetchval(
            "SELECT true FROM gateway_calls WHERE idempotency_key = ANY($1::text[]) AND success"
            " AND action IN ('authorize', 'purchase') LIMIT 1", list(idempotency_keys)))

    async def call(self, action: str, *, gateway_token: str, amount: Decimal, idempotency_key: str) -> GatewayResult:
        """`action`: "authorize", "purchase" (authorize and capture at once), "capture", "void", "refund".
        The first call under a key decides its outcome and is recorded in the same statement;
        a later one (a retry) is answered what was recorded."""
        recorded = await self.pool.fetchrow(_CALL, idempotency_key, gateway_token, action, amount)
        if recorded is None:  # recorded by a concurrent call after this statement's snapshot was taken
            recorded = await self.pool.fetchrow("SELECT success, authorization_code, message FROM gateway_calls"
                                                " WHERE idempotency_key = $1", idempotency_key)
        return GatewayResult(recorded["success"], recorded["authorization_code"], recorded["message"])


# One round trip: the outcome (the card approves; capture, void and refund act on an earlier
# authorisation, which always exists here), recorded unless a call under the key was, and answered.
_CALL = """
WITH outcome AS (
    SELECT coalesce((SELECT approves FROM card_tokens WHERE gateway_token = $2), false)
           OR $3 IN ('capture', 'void', 'refund') AS success
), inserted AS (
    INSERT INTO gateway_calls (idempotency_key, action, amount, success, authorization_code, message)
    SELECT $1, $3, $4, o.success, CASE WHEN o.success THEN '12345' END,
           CASE WHEN NOT o.success THEN 'Bogus Gateway: Forced failure - ' || $3 END
    FROM outcome AS o
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING success, authorization_code, message
)
SELECT success, authorization_code, message FROM inserted
UNION ALL
SELECT success, authorization_code, message FROM gateway_calls
WHERE idempotency_key = $1 AND NOT EXISTS (SELECT 1 FROM inserted)
"""
