"""A participant's side of a saga's step: an operation the saga calls (services/order/saga.py),
run in its own transaction and answered with the events it stored.

A call that answers stores its answer events, and replies with them as it stored them (the
store hands back what was appended within the call: `recording_appends`), with no query.
A step is idempotent by saga id (the request id) and step: the participant's aggregate
remembers what it answered each request (`Cart.lock_answered`, `OrderShipments.allocations`,
`OrderPayments.concluded`, ...), so a repeated call changes nothing, stores no answer, and
answers the FIRST answer's events, found again in the stream by type and request id
(`EventStore.answers`), however many events came after them. A step called after its undo
does nothing and answers nothing. Concurrent calls of one step meet at the aggregate's
expected version: the loser's transaction rolls back (its effects with it) and, run again,
finds the winner's answer. The transaction is `db.transaction`: what the body saved (its
aggregate, the order an inline projection changed) is trusted once it commits
(shared/aggregate.py).

A step whose one write is its aggregate's append (with what rides in that statement: an
`Alongside` write, inline projections) needs no transaction of its own: `one_statement=True`
runs it on a connection outside any, which spares a `BEGIN` and a `COMMIT` and holds no
transaction open across what the body awaits (a payment gateway's answer). The append's
expected version guards it as it guards any command. A body that finds it needs more (row
locks, a second write) raises `TransactionNeeded` before it writes, and runs again in one.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any, Awaitable, Callable, Iterable, TypedDict

import asyncpg

from shared import db
from shared.envelope import DomainEvent, EventEnvelope
from shared.eventstore import ConcurrencyConflict, EventStore, recording_appends

ATTEMPTS = 50
# Steps a process runs at once, per pool: at most half its connections, since a step may need
# a second one (the payment gateway's ledger sits outside the step's transaction); a saga that
# calls a step again while the first call still runs (its reply late) cannot starve the pool.
_SLOTS: dict[int, asyncio.Semaphore] = {}


def _slots(pool: asyncpg.Pool) -> asyncio.Semaphore:
    slots = _SLOTS.get(id(pool))
    if slots is None:
        slots = _SLOTS[id(pool)] = asyncio.Semaphore(max(1, pool.get_max_size() // 2))
    return slots


class TransactionNeeded(Exception):
    """Raised by a step's body run with `one_statement=True`, before it wrote anything, when
    this call needs a transaction after all: the body runs again inside one."""


class StepReply(TypedDict):
    """A step's answer: its answer events as stored, as JSON (the envelope a Kafka message
    carries); none when the step was undone before it was called."""
    events: list[dict[str, Any]]


async def run_step(pool: asyncpg.Pool, store: EventStore, aggregate_type: str, number: str, request_id: str,
                   answers: Iterable[type[DomainEvent]],
                   body: Callable[[asyncpg.Connection], Awaitable[None]], *,
                   one_statement: bool = False) -> StepReply:
    """`body` (today's handler: load, decide, save) in a transaction (none with `one_statement`:
    module doc), retried on a concurrent append; then the answers of `request_id` of the
    `answers` types: those the body stored, or (it stored none) those stored before."""
    types = [cls.event_type for cls in answers]
    async with _slots(pool):
        if one_statement:
            try:
                return await _run(pool, store, aggregate_type, number, request_id, types, body, transaction=False)
            except TransactionNeeded:
                pass
        return await _run(pool, store, aggregate_type, number, request_id, types, body, transaction=True)


async def _run(pool: asyncpg.Pool, store: EventStore, aggregate_type: str, number: str, request_id: str,
               types: list[str], body: Callable[[asyncpg.Connection], Awaitable[None]], *,
               transaction: bool) -> StepReply:
    for attempt in range(ATTEMPTS):
        try:
            with recording_appends() as appended:
                async with pool.acquire() as conn:
                    async with db.transaction(conn) if transaction else contextlib.nullcontext():
                        await body(conn)
                        stored = _answers_among(appended, aggregate_type, number, request_id, types) \
                            or await store.answers(conn, aggregate_type, number, request_id, types)
            return {"events": [json.loads(envelope.to_json()) for envelope in stored]}
        except ConcurrencyConflict:
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
    raise ConcurrencyConflict(aggregate_type, number, -1)


def _answers_among(appended: list[EventEnvelope], aggregate_type: str, number: str, request_id: str,
                   types: list[str]) -> list[EventEnvelope]:
    """The answers of `request_id` among the events this call stored (on the stream: an inline
    projection may have appended to another one in the same transaction). An aggregate answers
    a request once, so an answer stored now is the first."""
    return [e for e in appended if e.aggregate_type == aggregate_type and e.aggregate_id == number
            and e.type in types and e.payload.get("request_id") == request_id]
