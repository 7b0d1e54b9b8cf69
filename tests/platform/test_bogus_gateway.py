"""The test payment gateway's ledger (services/payment/gateway.py): one round trip per call, the
first call under an idempotency key decides its outcome, a retry is answered the same."""
from __future__ import annotations

import asyncio
from decimal import Decimal

from services.payment.gateway import BogusGateway
from tests.conftest import ROOT, fresh_schema, schema_pool


async def test_a_call_is_recorded_once_and_a_retry_answered_as_first_recorded(stack, unique):
    async with fresh_schema(stack, f"pay_{unique}", ROOT / "services" / "payment" / "migrations") as schema, \
            schema_pool(stack, schema, max_size=4) as pool:
        gateway = BogusGateway(pool)
        good, bad = await gateway.tokenise("4111111111111111"), await gateway.tokenise("4000000000000002")
        sent: list[str] = []
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(record.query))
            gateway.pool = conn  # the connection's statements are logged
            first = await gateway.call("authorize", gateway_token=good, amount=Decimal("10.00"), idempotency_key="P1-a")
            gateway.pool = pool
        assert len(sent) == 1, sent  # decided, recorded and answered in one statement
        assert (first.success, first.authorization, first.message) == (True, "12345", None)
        declined = await gateway.call("authorize", gateway_token=bad, amount=Decimal("10.00"), idempotency_key="P2-a")
        assert (declined.success, declined.message) == (False, "Bogus Gateway: Forced failure - authorize")
        # A capture acts on an authorisation, whatever the card says.
        captured = await gateway.call("capture", gateway_token=bad, amount=Decimal("10.00"), idempotency_key="P2-c")
        assert captured.success
        # Retries, even with other arguments (a card that would decline) and concurrent: the first outcome.
        retries = await asyncio.gather(*(gateway.call("authorize", gateway_token=bad, amount=Decimal("99"),
                                                      idempotency_key="P1-a") for _ in range(6)))
        assert {(r.success, r.authorization) for r in retries} == {(True, "12345")}
        racing = await asyncio.gather(*(gateway.call("purchase", gateway_token=good, amount=Decimal("5"),
                                                     idempotency_key="P3-p") for _ in range(4)))
        assert {r.success for r in racing} == {True}
        rows = await pool.fetch("SELECT idempotency_key, amount FROM gateway_calls ORDER BY idempotency_key")
        assert [(r["idempotency_key"], r["amount"]) for r in rows] == [
            ("P1-a", Decimal("10.00")), ("P2-a", Decimal("10.00")), ("P2-c", Decimal("10.00")), ("P3-p", Decimal("5"))]
        assert await gateway.charged("P1-a") and not await gateway.charged("P2-a")
