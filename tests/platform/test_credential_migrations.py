"""Data written before the credentials left the events is carried over by the migrations on
real PostgreSQL: an order view row keeps its guest token's digest (order 008), a card entered
with payment.PaymentCreated.v1 keeps its gateway token in the payment service (payment 005),
and the stored v1 events read as v2 without either."""
from __future__ import annotations

import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

from services.payment.commands import token_of
from shared.contracts.order import guest_token_digest
from shared.contracts.payment import CardSource
from shared.db import migrate
from shared.envelope import EventEnvelope
from shared.eventstore import EventStore
from tests.conftest import fresh_schema, schema_pool

SERVICES = Path(__file__).resolve().parents[2] / "services"


def migrations_before(service: str, first_new: str, into: Path) -> Path:
    """The service's migrations as they were before `first_new`."""
    into.mkdir()
    for path in sorted((SERVICES / service / "migrations").glob("*.sql")):
        if path.stem >= first_new:
            break
        shutil.copy(path, into / path.name)
    return into


def v1_envelope(type_: str, aggregate_type: str, stream: str, payload: dict) -> EventEnvelope:
    return EventEnvelope(event_id=uuid.uuid4(), type=type_, version=1, aggregate_type=aggregate_type,
                         aggregate_id=stream, sequence=1, occurred_at=datetime.now(timezone.utc),
                         correlation_id="before", payload=payload)


async def test_a_v1_cards_gateway_token_is_carried_over_and_leaves_its_event(stack, unique, tmp_path):
    old = migrations_before("payment", "005", tmp_path / "payment")
    async with fresh_schema(stack, f"p_{unique}", old) as schema:
        card = {"id": 77, "month": 12, "year": 2030, "cc_type": "visa", "last_digits": "1111", "name": None,
                "gateway_token": "tok_before_v2_0123456789"}
        created = v1_envelope("payment.PaymentCreated", "OrderPayments", "R1", {
            "order_number": "R1", "payment_id": 5, "payment_number": "PABC", "payment_method_id": 2,
            "payment_method_name": "Credit Card", "method_type": "gateway", "amount": "10.00", "source": card})
        store = EventStore(schema, "unused")
        async with schema_pool(stack, schema, max_size=2) as pool:
            async with pool.acquire() as conn, conn.transaction():
                await store.append_envelopes(conn, [created], key="R1", expected_version=0)
            applied = await migrate(stack.database_url, schema, SERVICES / "payment" / "migrations")
            assert applied[0] == "service/005_card_sources"  # and those after it
            [loaded] = await store.load_stream(pool, "OrderPayments", "R1")
            assert loaded.version == 2 and "gateway_token" not in loaded.payload["source"]
            source = CardSource.model_validate(loaded.payload["source"])
            assert await token_of(pool, source) == "tok_before_v2_0123456789"


async def test_an_order_views_guest_token_becomes_its_digest(stack, unique, tmp_path):
    old = migrations_before("order", "009", tmp_path / "order")
    async with fresh_schema(stack, f"o_{unique}", old) as schema:
        async with schema_pool(stack, schema, max_size=2) as pool:
            await pool.execute("INSERT INTO order_view (number, guest_token, state, currency, created_at, updated_at)"
                               " VALUES ('R1', 'the-guest-token-of-R1', 'cart', 'USD', now(), now())")
            applied = await migrate(stack.database_url, schema, SERVICES / "order" / "migrations")
            assert applied[0] == "service/009_guest_token_digest"  # and those after it
            row = dict(await pool.fetchrow("SELECT * FROM order_view WHERE number = 'R1'"))
        assert row["guest_token_digest"] == guest_token_digest("the-guest-token-of-R1")
        assert "guest_token" not in row and row["dialect"] is None
