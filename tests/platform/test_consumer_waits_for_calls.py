"""A consumer's message that a call of this process is answering right now waits for that call
(shared/under_way.py, shared/inflight.py), through the real broker and PostgreSQL: holding no
slot, so other orders go on; then passed over without a transaction if the call applied it, and
handled as ever if the call failed or outlasted its time."""
from __future__ import annotations

import asyncio
import time

from shared.inline import remember_applied
from shared.under_way import answering
from tests.helpers.events import Ticked
from tests.helpers.kafka import consuming, message, publish


async def effects(pool) -> list[tuple[str, int]]:
    return [(r["key"], r["n"]) for r in await pool.fetch("SELECT key, n FROM effects ORDER BY id")]


async def record_effect(conn, envelope):
    await conn.execute("INSERT INTO effects (key, n) VALUES ($1, $2)", envelope.aggregate_id, envelope.payload["n"])


async def until(predicate, task, what: str, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def answered_while_a_waits(stack, pool, unique, *, applied: bool, call_timeout_s: float = 60,
                                 call_lasts_s: float = 0.5) -> tuple[list, list, str]:
    """Order A's message is answered by a call of this process (marked `answering` for the
    consumer, which has a single slot) under way while it arrives, with order C's after it.
    Returns what was handled while A's call ran, everything in the end, and A's event id.
    `applied`: the call remembers A as applied here before it ends (it succeeded), or not (it
    failed). B's message, before them, only shows the consumer is running."""
    settings = stack.settings(kafka_topic_partitions=1, consumer_concurrency=1)
    topic, group = f"calls.{unique}", f"g-{unique}"
    await pool.execute("CREATE TABLE effects (id serial, key text NOT NULL, n int NOT NULL)")
    a, a_message = message(Ticked(n=1), stream="A", sequence=1)
    await publish(settings, topic, [message(Ticked(n=2), stream="B", sequence=1)[1]])
    async with consuming(settings, pool, topic, group, record_effect) as task:
        await until(lambda: pool.fetchval("SELECT count(*) = 1 FROM effects"), task, "the consumer never started")
        with answering(group, str(a.event_id), call_timeout_s):
            await publish(settings, topic, [a_message, message(Ticked(n=3), stream="C", sequence=1)[1]])
            await until(lambda: pool.fetchval("SELECT count(*) >= 2 FROM effects"), task,
                        "C was not handled while A's call was under way")
            await asyncio.sleep(call_lasts_s)  # A fetched long since: it waits for the call
            meanwhile = await effects(pool)
            if applied:
                remember_applied(group, [str(a.event_id)])
        # A's second message shows that the consumer is done with A's first.
        await publish(settings, topic, [message(Ticked(n=4), stream="A", sequence=2)[1]])
        await until(lambda: pool.fetchval("SELECT count(*) FROM effects WHERE n = 4"), task,
                    "the consumer did not go on with A after its call ended")
        await asyncio.sleep(0.3)
    return meanwhile, await effects(pool), str(a.event_id)


async def test_a_message_a_call_answers_waits_for_it_holding_no_slot_then_is_passed_over(stack, pool, unique):
    meanwhile, handled, a = await answered_while_a_waits(stack, pool, unique, applied=True)
    assert meanwhile == [("B", 2), ("C", 3)]  # C had the only slot while A waited for its call
    assert handled == [("B", 2), ("C", 3), ("A", 4)]  # A's first was passed over: the call applied it
    assert not await pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id = $1::uuid", a)


async def test_a_message_whose_call_failed_is_handled_as_ever(stack, pool, unique):
    meanwhile, handled, a = await answered_while_a_waits(stack, pool, unique, applied=False)
    assert meanwhile == [("B", 2), ("C", 3)]
    assert handled == [("B", 2), ("C", 3), ("A", 1), ("A", 4)]  # the call applied nothing: the consumer does
    assert await pool.fetchval("SELECT count(*) FROM processed_events WHERE event_id = $1::uuid", a) == 1


async def test_a_message_is_handled_once_its_calls_time_is_up_though_the_call_still_runs(stack, pool, unique):
    meanwhile, handled, _ = await answered_while_a_waits(stack, pool, unique, applied=False, call_timeout_s=1.5,
                                                         call_lasts_s=4)
    assert meanwhile == [("B", 2), ("C", 3), ("A", 1)]  # after 1.5 s, while the call was still under way
    assert handled == [*meanwhile, ("A", 4)]
