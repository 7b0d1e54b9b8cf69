"""A command on a long stream does not replay it whole: the repository remembers states and
reads only what was appended since, and never trusts a state the stream no longer begins with."""
from __future__ import annotations

from shared.aggregate import Aggregate, Repository
from shared.eventstore import EventStore
from tests.helpers.events import Ticked

LONG = 1000


class Tally(Aggregate):
    aggregate_type = "Tally"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0

    def tick(self, n: int) -> None:
        self._record(Ticked(n=n))

    def _on_Ticked(self, event: Ticked) -> None:
        self.total += event.n


async def long_stream(pool, store: EventStore, tally_id: str, length: int = LONG) -> None:
    """`length` events of n = 1 (appended a hundred at a time, as if over many commands)."""
    for start in range(0, length, 100):
        async with pool.acquire() as conn:
            await store.append(conn, aggregate_type="Tally", aggregate_id=tally_id, expected_version=start,
                               events=[Ticked(n=1)] * min(100, length - start))


async def test_a_command_on_a_long_stream_reads_only_what_was_appended_since(pool, schema):
    store = EventStore(schema, "unused")
    await long_stream(pool, store, "T-1")
    here, elsewhere = Repository(store, Tally), Repository(store, Tally)  # two processes
    assert (await here.load(pool, "T-1")).total == LONG and here.events_read == LONG
    # Its own commands: nothing read again, however long the stream.
    for n in (2, 3):
        result = await here.execute(pool, "T-1", lambda t, n=n: t.tick(n))
        assert result.aggregate.version == LONG + (n - 1)
    assert here.events_read == LONG
    # Another process appends: this one reads those events alone, and sees them.
    await elsewhere.execute(pool, "T-1", lambda t: t.tick(10))
    tally = await here.load(pool, "T-1")
    assert (tally.total, tally.version, here.events_read) == (LONG + 15, LONG + 3, LONG + 1)
    # What a command is given is its own copy: changing it changes nothing remembered.
    tally.tick(1000)
    assert (await here.load(pool, "T-1")).total == LONG + 15


async def test_a_state_the_stream_does_not_begin_with_is_not_trusted(pool, schema):
    store = EventStore(schema, "unused")
    await long_stream(pool, store, "T-2", 20)
    here, elsewhere = Repository(store, Tally), Repository(store, Tally)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        tally = await here.load(conn, "T-2")
        tally.tick(500)
        await here.save(conn, tally)  # remembered at version 21, then rolled back
        await transaction.rollback()
    await elsewhere.execute(pool, "T-2", lambda t: t.tick(7))  # the real event 21
    read_before = here.events_read
    reloaded = await here.load(pool, "T-2")
    assert (reloaded.total, reloaded.version) == (27, 21)
    assert here.events_read - read_before == 21  # replayed whole, not trusted


async def test_short_streams_and_the_oldest_beyond_the_bound_are_not_remembered(pool, schema):
    store = EventStore(schema, "unused")
    repository = Repository(store, Tally, cache_size=2, cache_min_events=16)
    for tally_id, length in (("short", 10), ("a", 20), ("b", 20), ("c", 20)):
        await long_stream(pool, store, tally_id, length)
        await repository.load(pool, tally_id)
    assert list(repository._states) == ["b", "c"]
