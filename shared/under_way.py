"""Calls under way in this process that answer an event one of its consumers would otherwise
handle again from Kafka (issue #26.5: fewer, quieter consumers).

In one process the order calls shipping's `build_shipments` under its `DeliveryRequested`
(services/order/delivery.py), and the saga runner calls its participants and records their
answers from the replies (shared/saga_runner.py). The same events reach the consumers from Kafka
as well, often while the call still runs: the outbox relay publishes an event as soon as it
commits, while the call may still be waiting for a pool connection. Marked only once the call
had answered (`remember_applied`), such a delivery came too early to be passed over, and cost a
transaction (a duplicate record, or the work done twice with one side conflicting).

So whoever makes such a call marks it under way for the consumer it answers, from before the
call until what it did is remembered (`answering`, keyed by the consumer and the event the call
answers: the event itself, or the event that causes the answers it will store). A consumer about
to handle a message looks here first (shared/consumer.py, shared/inflight.py): while a call
answers it, the message's key waits, holding no slot, so the consumer's other keys go on; then
the message is passed over if it was applied here (`applied_here`) and handled as ever if not,
so a call that failed, timed out or lost its reply leaves its event to the consumer (the Kafka
path is what answers a lost reply). No wait outlasts the call's own timeout, given when it is
marked. Memory of this process only: an event from another process, or after a restart, finds
nothing here and is handled as ever.
"""
from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Iterable, Iterator


class Call:
    """A call under way, as a consumer waits for it: until it ends, or its deadline passes."""

    def __init__(self, timeout_s: float) -> None:
        self.deadline = asyncio.get_running_loop().time() + timeout_s
        self.ended = asyncio.Event()

    def pending(self) -> bool:
        return not self.ended.is_set() and asyncio.get_running_loop().time() < self.deadline

    async def settled(self) -> None:
        """Once the call ended or its time is up (a timed-out call's event is handled as ever)."""
        remaining = self.deadline - asyncio.get_running_loop().time()
        if self.ended.is_set() or remaining <= 0:
            return
        try:
            await asyncio.wait_for(self.ended.wait(), remaining)
        except TimeoutError:
            pass


# (consumer, event id) -> the calls under way that answer it (a step called again by the sweep
# while its first call still runs is a second call of the same key).
_under_way: dict[tuple[str, str], list[Call]] = {}


@contextmanager
def answering(consumer: str, event_id: str | None, timeout_s: float) -> Iterator[None]:
    """While the block runs, `consumer`'s deliveries of `event_id`, or of events it caused, wait
    for it (at most `timeout_s`). The block remembers what it applied (`remember_applied`) before
    it ends, however it ends; nothing is marked without an event id."""
    if event_id is None:
        yield
        return
    key, call = (consumer, event_id), Call(timeout_s)
    _under_way.setdefault(key, []).append(call)
    try:
        yield
    finally:
        call.ended.set()
        calls = _under_way[key]
        calls.remove(call)
        if not calls:
            del _under_way[key]


def none() -> bool:
    """No call is under way in this process (the usual case, and always for the services apart)."""
    return not _under_way


def calls(consumer: str, event_ids: Iterable[str | None]) -> list[Call]:
    """The calls still under way (within their time) that answer any of `event_ids` for `consumer`."""
    if not _under_way:
        return []
    return [call for event_id in event_ids if event_id
            for call in _under_way.get((consumer, event_id), ()) if call.pending()]
