"""Keeps the embedded broker small by emptying its topics once everything in them is handled.

The embedded broker (tansu 0.6, memory engine) keeps every message it is sent: it has no
retention, and `DeleteRecords` is not implemented. Each produce and each fetch costs it more
the more it holds, so a long-running system slows down minute by minute (docs/performance.md,
"Soak"). Deleting a topic does free it. So once the relays have published
`BROKER_RECYCLE_AFTER_MESSAGES` messages since the last time, and every consumer group has
fetched, handled and committed all of them, the services' topics are deleted and created
again, empty:

1. the relays pause between batches (appends go on filling the outbox, in PostgreSQL);
2. every consumer group must be drained within `BROKER_RECYCLE_DRAIN_S`, or this round is
   given up (everything resumes; the next try comes after as many messages again);
3. the consumers stop fetching from their partitions, keeping them and their place in their
   groups; the topics are deleted and created anew;
4. the consumers read every partition again from offset 0, committing 0, so nothing of the
   new topics is skipped for an offset remembered from the old ones;
5. the relays resume and publish what the outbox gathered meanwhile.

Nothing is lost: durability and exactly-once effects never depended on the broker (the
outbox and the processed-event records are in PostgreSQL), and nothing is deleted before
every group has committed it. Only for a broker this system started for itself and in one
process (`tillstream.system` turns it on): every relay and consumer of these topics is here.
A consumer group it does not know (a subscriber of the order events, say) stops it: its
messages are never deleted under it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from shared import metrics
from shared.kafka import ensure_topics
from shared.service import ServiceRuntime
from shared.settings import Settings

log = logging.getLogger(__name__)

# The most any step but the drain may take (each takes milliseconds).
STEP_S = 10.0


async def _until(condition: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


class BrokerRecycler:
    def __init__(self, settings: Settings, runtimes: list[ServiceRuntime]) -> None:
        self.settings = settings
        self.runtimes = runtimes
        self._counted = 0  # published messages already accounted for

    def _published(self) -> int:
        return sum(runtime.relay.published for runtime in self.runtimes if runtime.relay is not None)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.broker_recycle_check_s)
            if self._published() - self._counted >= self.settings.broker_recycle_after_messages:
                try:
                    await self.recycle()
                except (OSError, KafkaError, asyncio.TimeoutError) as exc:
                    log.error("emptying the broker's topics failed", extra={"fields": {"error": repr(exc)}})

    async def recycle(self) -> bool:
        """Empty the topics if every group has handled everything in them; True if done."""
        started = time.monotonic()
        self._counted = self._published()  # done or not, the next try comes after as many again
        consumers = [consumer for runtime in self.runtimes for consumer in runtime.consumers]
        topics = sorted({topic for runtime in self.runtimes for topic in runtime.definition.topics})
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            unknown = {group for group, _ in await admin.list_consumer_groups()} - {c.group_id for c in consumers}
            if unknown:
                log.warning("broker topics kept: consumer groups other than ours use them",
                            extra={"fields": {"groups": sorted(unknown)}})
                metrics.BROKER_EMPTIED.labels("other_groups").inc()
                return False
            relays = [runtime.relay for runtime in self.runtimes if runtime.relay is not None]
            await asyncio.gather(*(relay.pause() for relay in relays))
            phases = {"pause": time.monotonic()}
            for consumer in consumers:
                consumer.drain()
            freezing = deleting = False
            try:
                async def drained() -> bool:
                    return all(await asyncio.gather(*(consumer.drained() for consumer in consumers)))

                if not await _until(drained, self.settings.broker_recycle_drain_s):
                    log.info("broker topics kept: not every consumer group caught up in time")
                    metrics.BROKER_EMPTIED.labels("not_drained").inc()
                    return False
                phases["drain"] = time.monotonic()
                # Frozen, a consumer sends no fetch for a topic while it is gone, and keeps its
                # partitions and its place in its group (joining again can take seconds).
                freezing = True
                for consumer in consumers:
                    consumer.freeze()
                phases["freeze"] = time.monotonic()
                deleting = True
                await admin.delete_topics(topics)

                async def gone() -> bool:
                    return not set(topics) & set(await admin.list_topics())

                await _until(gone, STEP_S)
                phases["delete"] = time.monotonic()
            finally:
                try:
                    if deleting:
                        await ensure_topics(self.settings, topics)
                        await asyncio.wait_for(asyncio.gather(*(consumer.reposition() for consumer in consumers)),
                                               STEP_S)
                        phases["recreate"] = time.monotonic()
                    elif freezing:
                        for consumer in consumers:
                            consumer.thaw()
                finally:  # whatever failed above, the relays and consumers go on
                    for consumer in consumers:
                        consumer.drain(False)
                    for relay in relays:
                        relay.resume()
                    metrics.BROKER_PAUSE_SECONDS.observe(time.monotonic() - phases["pause"])
        finally:
            await admin.close()
        metrics.BROKER_EMPTIED.labels("emptied").inc()
        marks = [started, *phases.values()]
        log.info("broker topics emptied", extra={"fields": {
            "topics": topics, "messages": self._counted, "ms": round((time.monotonic() - started) * 1000),
            # How long each step took; the relays were paused from "pause" to the end.
            "steps_ms": {name: round((mark - before) * 1000) for name, mark, before in
                         zip(phases, marks[1:], marks, strict=False)}}})
        return True
