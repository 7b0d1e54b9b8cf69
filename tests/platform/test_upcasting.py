"""Schema evolution: stored (and published) v1 events are read as v2, never rewritten."""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone

from shared.envelope import EventEnvelope, decode_event, decode_event_json
from shared.eventstore import EventStore
from tests.helpers.events import CustomerNamedV2
from tests.helpers.kafka import consuming, publish


def stored_v1(stream: str) -> EventEnvelope:
    """An event written by code that only knew version 1."""
    return EventEnvelope(event_id=uuid.uuid4(), type="test.CustomerNamed", version=1, aggregate_type="Customer",
                         aggregate_id=stream, sequence=1, occurred_at=datetime.now(timezone.utc),
                         correlation_id="c", payload={"name": "Ada Lovelace"})


async def test_a_stored_v1_event_reads_as_v2(pool, schema):
    store = EventStore(schema, "unused")
    async with pool.acquire() as conn, conn.transaction():
        await store.append_envelopes(conn, [stored_v1("C1")], key="C1", expected_version=0)
    [loaded] = await store.load_stream(pool, "Customer", "C1")
    assert loaded.version == 2 and loaded.payload == {"first_name": "Ada", "last_name": "Lovelace"}
    assert decode_event(loaded) == CustomerNamedV2(first_name="Ada", last_name="Lovelace")
    raw = await pool.fetchrow("SELECT version, payload FROM events WHERE aggregate_id = 'C1'")
    assert (raw["version"], raw["payload"]) == (1, {"name": "Ada Lovelace"})  # the store is never rewritten
    # The bulk path (a rebuild decodes payloads straight from JSON) upcasts the same way.
    text = await pool.fetchval("SELECT payload::text FROM events WHERE aggregate_id = 'C1'")
    assert decode_event_json("test.CustomerNamed", 1, text) == CustomerNamedV2(first_name="Ada", last_name="Lovelace")
    assert decode_event_json("test.CustomerNamed", 2, '{"first_name": "Ada", "last_name": "L"}') == \
        CustomerNamedV2(first_name="Ada", last_name="L")


async def test_a_v1_event_from_kafka_reaches_handlers_as_v2(stack, pool, unique):
    settings = stack.settings()
    topic = f"upcast.{unique}"
    old = stored_v1("C2")
    await publish(settings, topic, [(b"C2", old.to_json(), old.kafka_headers())])
    seen: list = []

    async def handler(conn, envelope):
        seen.append(decode_event(envelope))

    async with consuming(settings, pool, topic, f"g-{unique}", handler):
        deadline = time.monotonic() + 30
        while not seen:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    assert seen == [CustomerNamedV2(first_name="Ada", last_name="Lovelace")]
