"""A command on a long stream does not replay it whole: the repository remembers states and
reads only what was appended since, and never trusts a state the stream no longer begins with.
A command after this process's own last command reads nothing: a state behind the stream is
caught by the append, and a refusal or a no-op on it is judged again on the stored stream."""
from __future__ import annotations

import pytest

from shared.aggregate import Aggregate, DomainError, Repository
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


async def saved_then_rolled_back(pool, repository: Repository, tally_id: str) -> None:
    """A tick saved (and so remembered) in a transaction that then rolls back."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        tally = await repository.load(conn, tally_id)
        tally.tick(500)
        await repository.save(conn, tally)
        await transaction.rollback()


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
    await saved_then_rolled_back(pool, here, "T-2")  # remembered at version 21
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


class Capped(Tally):
    """A tally with rules to be judged on a state that may be behind the stream."""

    def tick_below(self, n: int, cap: int) -> None:
        if self.total + n > cap:
            raise DomainError("over_cap", f"{self.total} + {n} is over {cap}")
        self.tick(n)

    def set_to(self, total: int) -> None:
        if total != self.total:  # nothing to record when it is so already
            self.tick(total - self.total)


async def test_a_command_runs_on_the_state_the_last_command_here_committed(pool, schema):
    store = EventStore(schema, "unused")
    here = Repository(store, Capped)
    await here.execute(pool, "C-1", lambda t: t.tick(1))
    reads = here.streams_read
    for n in range(2, 6):  # a short stream: trusted all the same, no read at all
        await here.execute(pool, "C-1", lambda t, n=n: t.tick(n))
    assert here.streams_read == reads
    assert (await here.load(pool, "C-1")).total == 15
    # What a command was given is its own copy: a change after the fact is not remembered.
    result = await here.execute(pool, "C-1", lambda t: t.tick(1))
    result.aggregate.total = 99
    assert (await here.execute(pool, "C-1", lambda t: t.tick(1))).aggregate.total == 17


async def test_a_trusted_state_behind_the_stream_is_caught_by_the_append_refusal_or_no_op(pool, schema):
    store = EventStore(schema, "unused")
    here, elsewhere = Repository(store, Capped), Repository(store, Capped)  # two processes
    await here.execute(pool, "C-2", lambda t: t.tick(10))
    # Another process appends: this one's state is behind; its append conflicts, the command
    # runs again on the stream as stored, and nothing is lost or appended twice.
    await elsewhere.execute(pool, "C-2", lambda t: t.tick(5))
    done = await here.execute(pool, "C-2", lambda t: t.tick(1))
    assert (done.aggregate.total, done.aggregate.version) == (16, 3)
    # A refusal on a state that is behind is judged again on the stream: elsewhere brought the
    # total down, so what here's state would refuse is accepted.
    await elsewhere.execute(pool, "C-2", lambda t: t.set_to(0))
    accepted = await here.execute(pool, "C-2", lambda t: t.tick_below(3, cap=10))
    assert (accepted.aggregate.total, accepted.aggregate.version) == (3, 5)
    # And "nothing to do" on a state that is behind: here believes 3, the stream says 7.
    await elsewhere.execute(pool, "C-2", lambda t: t.set_to(7))
    changed = await here.execute(pool, "C-2", lambda t: t.set_to(3))
    assert (changed.aggregate.total, changed.aggregate.version, len(changed.events)) == (3, 7, 1)
    # A refusal the stream confirms is answered as ever.
    with pytest.raises(DomainError):
        await here.execute(pool, "C-2", lambda t: t.tick_below(20, cap=10))
    events = await store.load_stream(pool, "Tally", "C-2")
    assert [e.sequence for e in events] == list(range(1, 8))


async def test_a_state_saved_in_a_transaction_that_rolled_back_is_never_trusted(pool, schema):
    store = EventStore(schema, "unused")
    here, elsewhere = Repository(store, Capped), Repository(store, Capped)
    await here.execute(pool, "C-3", lambda t: t.tick(1))
    await saved_then_rolled_back(pool, here, "C-3")  # remembered at version 2
    await elsewhere.execute(pool, "C-3", lambda t: t.tick(7))  # the real event 2
    done = await here.execute(pool, "C-3", lambda t: t.tick(1))
    assert (done.aggregate.total, done.aggregate.version) == (9, 3)


async def test_states_of_short_streams_are_bounded_apart_from_long_ones(pool, schema):
    store = EventStore(schema, "unused")
    repository = Repository(store, Capped, cache_size=2, cache_min_events=16, cache_recent=2)
    await long_stream(pool, store, "long", 20)
    await repository.load(pool, "long")
    for tally_id in ("s1", "s2", "s3"):  # a shop's churn of short streams...
        await repository.execute(pool, tally_id, lambda t: t.tick(1))
    assert list(repository._recent) == ["s2", "s3"]
    assert list(repository._states) == ["long"]  # ...does not push a long one out
    reads = repository.streams_read
    await repository.execute(pool, "s3", lambda t: t.tick(1))  # remembered: no read
    await repository.execute(pool, "s1", lambda t: t.tick(1))  # forgotten: read again
    assert repository.streams_read == reads + 1


async def test_a_stream_the_caller_takes_to_be_new_is_not_read_and_one_that_exists_is(pool, schema):
    store = EventStore(schema, "unused")
    here, elsewhere = Repository(store, Capped), Repository(store, Capped)
    created = await here.execute(pool, "N-1", lambda t: t.tick(4), new=True)
    assert (created.aggregate.version, here.streams_read) == (1, 0)  # no read
    # Wrongly taken to be new: the append conflicts, and the command runs on the stream.
    await elsewhere.execute(pool, "N-2", lambda t: t.tick(8))
    done = await here.execute(pool, "N-2", lambda t: t.tick(1), new=True)
    assert (done.aggregate.total, done.aggregate.version) == (9, 2)
    # A refusal or "nothing to do" on the empty state is judged on the stream too.
    await elsewhere.execute(pool, "N-3", lambda t: t.tick(-10))
    accepted = await Repository(store, Capped).execute(pool, "N-3", lambda t: t.tick_below(5, cap=0), new=True)
    assert (accepted.aggregate.total, accepted.aggregate.version) == (-5, 2)
    changed = await Repository(store, Capped).execute(pool, "N-3", lambda t: t.set_to(0), new=True)
    assert (changed.aggregate.total, changed.aggregate.version, len(changed.events)) == (0, 3, 1)
    assert [e.sequence for e in await store.load_stream(pool, "Tally", "N-3")] == [1, 2, 3]
