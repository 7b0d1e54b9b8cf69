"""Consumer lag per group and partition, for every group on the broker (ours and subscribers').

A group's lag on a partition is the partition's end less the group's committed offset. The
end is measured, not taken from the broker's ListOffsets answer: tansu (the embedded broker)
answers there with its last record batch's base offset + 1, which after multi-record batches
is short of the true end (41 for a partition holding 81 records in batches of 10, 30 and 41).
So the last batch is fetched and the end is the offset after its last record (or the fetch's
high watermark, which tansu does report right). A new append always moves the reported end,
so a partition whose reported end has not moved keeps its measured end without a fetch: a
probe kept open costs a ListOffsets per refresh and a fetch per partition written since.

Committed offsets are read with OffsetFetch (no probe joins a group, so none is disturbed).
A group this probe was not told about is looked up on every partition of the broker, then
only on the topics it has committed on; that look-up is repeated every `rediscover_s` (a
sixth of it while the group has committed nowhere), so a subscriber that starts reading
another topic is seen.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

# How long a fetch of last batches may take before the reported end is used instead.
_FETCH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has committed nothing there (it reads from the start)
    end: int
    lag: int

    def as_dict(self) -> dict:
        return asdict(self)


class LagProbe:
    """Open clients to one broker, measuring lag as often as asked (`measure`)."""

    def __init__(self, bootstrap: str, *, rediscover_s: float = 60.0) -> None:
        self.bootstrap = bootstrap
        self.rediscover_s = rediscover_s
        self._admin: AIOKafkaAdminClient | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._ends: dict[TopicPartition, tuple[int, int, float]] = {}  # tp -> (reported end, measured end, when)
        self._discovered: dict[str, tuple[float, set[str]]] = {}  # group -> (when, topics it committed on)

    async def start(self) -> LagProbe:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        self._reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                        fetch_max_wait_ms=10)
        try:
            await self._admin.start()
            await self._reader.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        for client, close in ((self._reader, "stop"), (self._admin, "close")):
            if client is not None:
                try:
                    await getattr(client, close)()
                except (KafkaError, OSError):
                    pass
        self._reader = self._admin = None

    async def __aenter__(self) -> LagProbe:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def admin(self) -> Any:
        if self._admin is None:
            raise RuntimeError("the lag probe is not started")
        return self._admin

    @property
    def reader(self) -> Any:
        if self._reader is None:
            raise RuntimeError("the lag probe is not started")
        return self._reader

    async def groups(self) -> list[str]:
        return sorted(group for group, *_ in await self.admin.list_consumer_groups())

    async def partitions(self, topics: set[str] | list[str] | None = None) -> list[TopicPartition]:
        """The partitions of `topics` (None: of every topic on the broker). From the metadata of
        every topic: the reader's own refresh asks only for the topics it was last assigned."""
        cluster = await self.reader._client.fetch_all_metadata()
        names = sorted(cluster.topics() if topics is None else topics)
        return [TopicPartition(t, p) for t in names for p in sorted(cluster.partitions_for_topic(t) or ())]

    async def ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The true end of each partition (the offset its next record will get)."""
        if not tps:
            return {}
        # ListOffsets goes to each partition's leader, known only for the topics the reader tracks.
        await self.reader._client.set_topics(sorted({tp.topic for tp in tps}))
        reported = await self.reader.end_offsets(tps)
        starts = await self.reader.beginning_offsets(tps)
        now = time.monotonic()
        stale = [tp for tp in tps if reported[tp] > starts[tp] and not self._still(tp, reported[tp], now)]
        if stale:
            measured = await self._last_offsets(stale, reported)
            for tp in stale:
                self._ends[tp] = (reported[tp], max(reported[tp], measured.get(tp, reported[tp])), now)
        return {tp: self._ends[tp][1] if reported[tp] > starts[tp] else reported[tp] for tp in tps}

    def _still(self, tp: TopicPartition, reported: int, now: float) -> bool:
        """The measured end still holds: the reported one has not moved. Measured again after
        `rediscover_s` all the same, for a topic deleted and created anew (shared/recycle.py)
        whose reported end has come back to the same number."""
        cached = self._ends.get(tp)
        return cached is not None and cached[0] == reported and now - cached[2] < self.rediscover_s

    async def _last_offsets(self, tps: list[TopicPartition], reported: dict[TopicPartition, int]) -> dict:
        """Fetch each partition's last batch (it starts at the reported end - 1) and return the
        offset after its last record."""
        reader, found = self.reader, dict[TopicPartition, int]()
        reader.assign(tps)
        for tp in tps:
            reader.seek(tp, reported[tp] - 1)
        deadline = time.monotonic() + _FETCH_TIMEOUT_S
        try:
            while len(found) < len(tps) and time.monotonic() < deadline:
                batch = await reader.getmany(*[tp for tp in tps if tp not in found], timeout_ms=200)
                for tp, records in batch.items():
                    if records:
                        found[tp] = max(records[-1].offset + 1, reader.highwater(tp) or 0)
        finally:
            reader.pause(*tps)  # no prefetching behind our back until the next measurement
        return found

    async def committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        if not tps:
            return {}
        offsets = await self.admin.list_consumer_group_offsets(group, partitions=tps)
        return {tp: (offsets[tp].offset if tp in offsets and offsets[tp].offset >= 0 else None) for tp in tps}

    async def measure(self, known: dict[str, list[str]] | None = None, *,
                      every_group: bool = True) -> list[PartitionLag]:
        """Lag per partition of the `known` groups (on their topics, committed or not) and,
        with `every_group`, of every other group on the broker (where it has committed)."""
        known = dict(known or {})
        others = [g for g in await self.groups() if g not in known] if every_group else []
        everything = await self.partitions()
        wanted: dict[str, list[TopicPartition]] = {}
        for group, its_topics in known.items():
            wanted[group] = [tp for tp in everything if tp.topic in its_topics]
        for group in others:
            when, topics = self._discovered.get(group, (0.0, set()))
            # One that has committed nowhere yet is looked at more often: it is likely just starting.
            if time.monotonic() - when > (self.rediscover_s if topics else self.rediscover_s / 6):
                found = await self._committed_or_none(group, everything)
                topics = {tp.topic for tp, offset in found.items() if offset is not None}
                self._discovered[group] = (time.monotonic(), topics)
            wanted[group] = [tp for tp in everything if tp.topic in topics]
        for gone in set(self._discovered) - set(others):
            del self._discovered[gone]
        offsets = {group: await self._committed_or_none(group, tps) for group, tps in wanted.items()}
        ends = await self.ends(sorted({tp for tps in wanted.values() for tp in tps}))
        starts = await self.reader.beginning_offsets(list(ends)) if ends else {}
        rows = []
        for group, tps in wanted.items():
            for tp in tps:
                committed = offsets[group].get(tp)
                if committed is None and group not in known:
                    continue  # a subscriber's group reads only where it has committed
                behind = ends[tp] - (committed if committed is not None else starts[tp])
                rows.append(PartitionLag(group, tp.topic, tp.partition, committed, ends[tp], max(behind, 0)))
        return rows

    async def _committed_or_none(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        try:
            return await self.committed(group, tps)
        except (KafkaError, asyncio.TimeoutError):
            return {tp: None for tp in tps}  # a group being deleted or rebalanced: seen at the next refresh


def by_group(rows: list[PartitionLag]) -> dict[str, dict]:
    """Rows folded per group: its topics, partitions, total lag, and the rows."""
    groups: dict[str, dict] = {}
    for row in rows:
        entry = groups.setdefault(row.group, {"topics": [], "partitions": 0, "lag": 0, "detail": []})
        if row.topic not in entry["topics"]:
            entry["topics"].append(row.topic)
        entry["partitions"] += 1
        entry["lag"] += row.lag
        entry["detail"].append({"topic": row.topic, "partition": row.partition, "committed": row.committed,
                                "end": row.end, "lag": row.lag})
    return groups
