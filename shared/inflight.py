"""The messages a consumer has fetched and not yet handled (shared/consumer.py): each key's
in order, different keys at once, and the offsets that may be committed meanwhile."""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Awaitable, Callable, Sequence

from aiokafka import ConsumerRecord, TopicPartition

from shared.under_way import Call

# The most messages of one key handed to the handlers at once.
MAX_RUN = 64


class InFlight:
    """Fetched messages not yet handled. A key's messages (one aggregate: one order) are
    handled in order, each as soon as the one before it is done, up to `slots` runs at
    once, while the consumer goes on fetching: a slow order holds back only itself, never
    the next fetch. Those of a key that are waiting together when a slot frees are handed
    over as one run (at most MAX_RUN), which a handler may apply in one transaction.
    Per partition, the offset that may be committed is the lowest still open (or the one
    after the last fetched): a crash redelivers what was open, and handling is idempotent.
    A key whose next message a call of this process is answering right now (`answering`:
    shared/under_way.py) waits for that call before it takes a slot, so the wait holds back
    only that key; a run ends before such a message."""

    def __init__(self, handle_run: Callable[[list[ConsumerRecord]], Awaitable[None]],
                 slots: asyncio.Semaphore,
                 answering: Callable[[ConsumerRecord], Sequence[Call]] = lambda message: ()) -> None:
        self.handle_run = handle_run
        self.slots = slots
        self.answering = answering
        self.open: dict[object, set[int]] = {}
        self.fetched_to: dict[object, int] = {}
        self.waiting: dict[tuple, deque[ConsumerRecord]] = {}
        self.workers: dict[tuple, asyncio.Task] = {}  # one per key with messages waiting or running
        self.count = 0  # messages started and not yet done
        self._progress = asyncio.Event()
        self.failure: BaseException | None = None

    def pass_over(self, message: ConsumerRecord) -> None:
        """A message no handler acts on: done as soon as it is fetched."""
        tp = TopicPartition(message.topic, message.partition)
        self.open.setdefault(tp, set())
        self.fetched_to[tp] = message.offset + 1

    def start(self, message: ConsumerRecord) -> None:
        tp = TopicPartition(message.topic, message.partition)
        self.open.setdefault(tp, set()).add(message.offset)
        self.fetched_to[tp] = message.offset + 1
        key = (tp, message.key)
        self.waiting.setdefault(key, deque()).append(message)
        self.count += 1
        if key not in self.workers:
            worker = asyncio.create_task(self._work(key, tp))
            self.workers[key] = worker
            worker.add_done_callback(self._finished)

    async def _work(self, key: tuple, tp) -> None:
        queue = self.waiting[key]
        try:
            while queue:
                for call in self.answering(queue[0]):
                    await call.settled()  # no slot held: the other keys go on meanwhile
                async with self.slots:
                    run: list[ConsumerRecord] = []
                    while queue and len(run) < MAX_RUN and not self.answering(queue[0]):
                        run.append(queue.popleft())
                    if run:  # else a call began answering the next one while this key waited for a slot
                        await self.handle_run(run)
                for message in run:
                    self.open[tp].discard(message.offset)
                self.count -= len(run)
                self._progress.set()
        finally:
            # A failed run leaves its messages open (and the consumer stops: they are redelivered).
            del self.workers[key]
            if not queue:
                del self.waiting[key]

    def _finished(self, worker: asyncio.Task) -> None:
        if not worker.cancelled() and worker.exception() is not None and self.failure is None:
            self.failure = worker.exception()
        self._progress.set()

    def raise_failure(self) -> None:
        """A handler failed beyond its own retries: stop (the supervisor restarts the
        consumer, which redelivers from the last commit)."""
        if self.failure is not None:
            raise self.failure

    async def below(self, limit: int) -> None:
        while self.count >= limit:
            self._progress.clear()
            await self._progress.wait()
            self.raise_failure()

    def restart(self, tp) -> None:
        """The partition starts again at offset 0 (its topic was created anew)."""
        self.open[tp] = set()
        self.fetched_to[tp] = 0

    def committable(self) -> dict:
        return {tp: min(offsets) if offsets else self.fetched_to[tp] for tp, offsets in self.open.items()}

    async def stop(self) -> None:
        workers = list(self.workers.values())
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
