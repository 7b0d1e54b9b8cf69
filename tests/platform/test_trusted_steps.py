"""A saga's step and the commands run inside other transactions read nothing a process can know:
a step answers with the answer events it stored (no query), a state saved inside a transaction
is trusted once that transaction commits, and a command inside a transaction runs on the trusted
state with the same safety as `Repository.execute` (a conflict, a refusal or a no-op on a state
that is behind ends as on the stored stream). Real PostgreSQL; reads counted."""
from __future__ import annotations

import contextlib
import json

import pytest

from shared import db
from shared.aggregate import Aggregate, DomainError, Repository
from shared.eventstore import Alongside, ConcurrencyConflict, EventStore
from shared.inline import InlineProjection, forget_inline, project_inline
from shared.steps import TransactionNeeded, run_step
from tests.conftest import schema_pool
from tests.helpers.events import Answered, Awaited, Ticked, Withdrawn


class Desk(Aggregate):
    """A participant answering requests once each, never after the request was withdrawn."""
    aggregate_type = "Desk"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.answered: dict[str, int] = {}
        self.withdrawn: set[str] = set()
        self.awaited: str | None = None
        self.total = 0

    def wait_for(self, request_id: str) -> None:
        self._record(Awaited(request_id=request_id))

    def arrived(self, request_id: str, n: int) -> None:
        """As the order's delivery_arrived: an answer to a request not awaited is ignored."""
        if self.awaited == request_id:
            self.answer(request_id, n)

    def answer(self, request_id: str, n: int) -> None:
        if request_id in self.answered or request_id in self.withdrawn:
            return
        self._record(Answered(request_id=request_id, n=n))

    def withdraw(self, request_id: str) -> None:
        if request_id not in self.withdrawn:
            self._record(Withdrawn(request_id=request_id))

    def tick_below(self, n: int, cap: int) -> None:
        if self.total + n > cap:
            raise DomainError("over_cap", f"{self.total} + {n} is over {cap}")
        self._record(Ticked(n=n))

    def _on_Answered(self, event: Answered) -> None:
        self.answered[event.request_id] = event.n
        self.total += event.n

    def _on_Awaited(self, event: Awaited) -> None:
        self.awaited = event.request_id

    def _on_Withdrawn(self, event: Withdrawn) -> None:
        self.withdrawn.add(event.request_id)

    def _on_Ticked(self, event: Ticked) -> None:
        self.total += event.n


class CountingStore(EventStore):
    """Counts the queries for a step's answers."""

    def __init__(self, schema: str) -> None:
        super().__init__(schema, "unused")
        self.answer_queries = 0

    async def answers(self, conn, aggregate_type, aggregate_id, request_id, types):
        self.answer_queries += 1
        return await super().answers(conn, aggregate_type, aggregate_id, request_id, types)


def answering(desks: Repository, desk_id: str, request_id: str, n: int, *, tick: int = 0,
              also: str | None = None):
    """A step's body: load, answer, save; with `tick`, it records something that is no answer
    too, with `also`, the answer of that other request."""
    async def body(conn) -> None:
        desk = await desks.load(conn, desk_id)
        desk.answer(request_id, n)
        if tick:
            desk.tick_below(tick, cap=10**6)
        if also:
            desk.answer(also, n)
        await desks.save(conn, desk)
    return body


async def step(pool, store, desks, desk_id, request_id, n, **kwargs) -> list[dict]:
    reply = await run_step(pool, store, "Desk", desk_id, request_id, (Answered,),
                           answering(desks, desk_id, request_id, n, **kwargs))
    return reply["events"]


async def test_a_step_answers_with_the_events_it_stored_and_a_repeated_call_with_the_first(pool, schema):
    store = CountingStore(schema)
    desks = Repository(store, Desk)
    first = await step(pool, store, desks, "D-1", "r1", 5)
    assert store.answer_queries == 0  # answered with what it stored
    stored = await store.answers(pool, "Desk", "D-1", "r1", ["test.Answered"])
    assert first == [json.loads(e.to_json()) for e in stored]  # as stored, position and all
    assert [e["payload"]["n"] for e in first] == [5]
    # Repeated (another n): nothing stored, the first answer found again.
    store.answer_queries = 0
    assert await step(pool, store, desks, "D-1", "r1", 7) == first
    assert store.answer_queries == 1
    # A call that stores only what is no answer (another type) still answers the first answer.
    assert await step(pool, store, desks, "D-1", "r1", 9, tick=1) == first
    assert store.answer_queries == 2
    # ...and so does one that stores another request's answer.
    assert await step(pool, store, desks, "D-1", "r1", 9, also="r3") == first
    assert store.answer_queries == 3
    # Another request's answer stored now is not this request's: r2's call answers r2 alone.
    second = await step(pool, store, desks, "D-1", "r2", 3)
    assert [(e["payload"]["request_id"], e["payload"]["n"]) for e in second] == [("r2", 3)]
    assert store.answer_queries == 3


async def test_a_step_after_its_undo_answers_nothing(pool, schema):
    store = CountingStore(schema)
    desks = Repository(store, Desk)
    await desks.execute(pool, "D-2", lambda d: d.withdraw("r1"))
    assert await step(pool, store, desks, "D-2", "r1", 5) == []
    assert store.answer_queries == 1


class Undone(Exception):
    pass


async def saved_inside(pool, desks: Repository, desk_id: str, request_id: str, *, opened_by: bool = False,
                       outcome: str = "commit") -> None:
    """A command saved inside a transaction owned by `db.transaction` (or, `opened_by`, by
    `db.transaction_opened_by`, the consumers'); `outcome`: commit, rollback, or undone by a
    savepoint of the committed transaction."""
    async with pool.acquire() as conn:
        try:
            owner = db.transaction_opened_by(conn, "SELECT 1") if opened_by else db.transaction(conn)
            async with owner:
                async def save() -> None:
                    desk = await desks.load(conn, desk_id)
                    desk.answer(request_id, 1)
                    await desks.save(conn, desk)
                if outcome == "savepoint":
                    with contextlib.suppress(Undone):
                        async with db.savepoint(conn):
                            await save()
                            raise Undone
                else:
                    await save()
                if outcome == "rollback":
                    raise Undone
        except Undone:
            pass


@pytest.mark.parametrize("opened_by", [False, True])
async def test_a_state_saved_inside_a_transaction_is_trusted_once_it_commits(pool, schema, opened_by):
    store = EventStore(schema, "unused")
    desks = Repository(store, Desk)
    await saved_inside(pool, desks, "D-3", "r1", opened_by=opened_by)  # a short stream, never seen before
    reads = desks.streams_read
    done = await desks.execute(pool, "D-3", lambda d: d.answer("r2", 1))
    assert desks.streams_read == reads  # no read: trusted
    assert (done.aggregate.total, done.aggregate.version) == (2, 2)


@pytest.mark.parametrize("outcome", ["rollback", "savepoint"])
async def test_a_state_saved_in_a_transaction_or_savepoint_that_was_undone_is_not_trusted(pool, schema, outcome):
    store = EventStore(schema, "unused")
    desks, elsewhere = Repository(store, Desk), Repository(store, Desk)
    await desks.execute(pool, "D-4", lambda d: d.answer("r0", 1))
    await saved_inside(pool, desks, "D-4", "r1", outcome=outcome)  # remembered at version 2, undone
    await elsewhere.execute(pool, "D-4", lambda d: d.answer("r9", 5))  # the real event 2
    reads = desks.streams_read
    done = await desks.execute(pool, "D-4", lambda d: d.answer("r2", 1))
    assert desks.streams_read == reads + 1  # read, not trusted
    assert (done.aggregate.total, done.aggregate.version, sorted(done.aggregate.answered)) == \
        (7, 3, ["r0", "r2", "r9"])


# -- commands inside a transaction on the trusted state (Repository.run) --------------------
def running(desks: Repository, desk_id: str, decide, settled=None):
    """A step's body as the participants' are: Repository.run."""
    async def body(conn) -> None:
        await desks.run(conn, desk_id, decide, settled=settled)
    return body


async def run_step_of(pool, store, desks, desk_id, request_id, decide, settled=None) -> list[dict]:
    return (await run_step(pool, store, "Desk", desk_id, request_id, (Answered,),
                           running(desks, desk_id, decide, settled)))["events"]


async def test_a_step_runs_on_the_trusted_state_without_a_read(pool, schema):
    store = CountingStore(schema)
    desks = Repository(store, Desk)
    await desks.execute(pool, "D-5", lambda d: d.answer("r0", 1))
    reads = desks.streams_read
    for n, request in enumerate(("r1", "r2", "r3"), start=2):
        reply = await run_step_of(pool, store, desks, "D-5", request, lambda d, r=request, n=n: d.answer(r, n))
        assert [(e["payload"]["request_id"], e["sequence"]) for e in reply] == [(request, n)]
    assert desks.streams_read == reads  # trusted each time: committed by the step before
    assert store.answer_queries == 0
    # A repeated call: nothing recorded on the trusted state, decided again on the stream,
    # answered with the first answer.
    again = await run_step_of(pool, store, desks, "D-5", "r1", lambda d: d.answer("r1", 99))
    assert [(e["payload"]["request_id"], e["payload"]["n"]) for e in again] == [("r1", 2)]
    assert desks.streams_read == reads + 1
    # Unless the trusted state shows it settled for good (answered): then not even that read.
    await desks.execute(pool, "D-5", lambda d: d.answer("r4", 5))  # trusted again
    again = await run_step_of(pool, store, desks, "D-5", "r2", lambda d: d.answer("r2", 99),
                              settled=lambda d: "r2" in d.answered)
    assert [(e["payload"]["request_id"], e["payload"]["n"]) for e in again] == [("r2", 3)]
    assert desks.streams_read == reads + 1


async def test_a_stale_trusted_state_in_a_step_conflicts_and_the_step_answers_as_on_the_stream(pool, schema):
    store = CountingStore(schema)
    here, elsewhere = Repository(store, Desk), Repository(store, Desk)  # two instances
    await here.execute(pool, "D-6", lambda d: d.answer("r0", 1))
    # Another instance writes between two steps here: not overlooked.
    await elsewhere.execute(pool, "D-6", lambda d: d.answer("r1", 10))
    reply = await run_step_of(pool, store, here, "D-6", "r2", lambda d: d.answer("r2", 2))
    assert [(e["payload"]["request_id"], e["sequence"]) for e in reply] == [("r2", 3)]
    # The request the other instance answered, asked here: its first answer, not a second one.
    await elsewhere.execute(pool, "D-6", lambda d: d.answer("r3", 30))
    reply = await run_step_of(pool, store, here, "D-6", "r3", lambda d: d.answer("r3", 3))
    assert [(e["payload"]["n"], e["sequence"]) for e in reply] == [(30, 4)]
    # A refusal on a state that is behind is judged again on the stream: elsewhere brought the
    # total down, so what here's (trusted) state would refuse is accepted.
    await here.execute(pool, "D-6", lambda d: d.wait_for("r8"))  # trusted here, at 5
    await elsewhere.execute(pool, "D-6", lambda d: d.tick_below(-40, cap=100))  # total 43 -> 3
    async with pool.acquire() as conn, db.transaction(conn):
        stored = await here.run(conn, "D-6", lambda d: d.tick_below(5, cap=10))
    assert [e.sequence for e in stored] == [7]
    # And "nothing to do" on a state that is behind: here's state awaits r8, the stream r9.
    await elsewhere.execute(pool, "D-6", lambda d: d.wait_for("r9"))
    reply = await run_step_of(pool, store, here, "D-6", "r9", lambda d: d.arrived("r9", 9))
    assert [(e["payload"]["request_id"], e["sequence"]) for e in reply] == [("r9", 9)]
    events = await store.load_stream(pool, "Desk", "D-6")
    assert [e.sequence for e in events] == list(range(1, 10))
    assert [e.payload["request_id"] for e in events if e.type == "test.Answered"] == ["r0", "r1", "r2", "r3", "r9"]


async def test_a_conflict_inside_another_commands_transaction_forgets_the_state_it_ran_on(pool, schema):
    """As the order view's inline projection: another stream's append runs a command on a
    state here that is behind; the conflict forgets it, and the producer's retry reads the
    stream rather than conflicting again on the same state."""
    store = EventStore(schema, "unused")
    here, elsewhere, producers = Repository(store, Desk), Repository(store, Desk), Repository(store, Desk)
    await here.execute(pool, "D-7", lambda d: d.wait_for("r1"))
    await elsewhere.execute(pool, "D-7", lambda d: d.wait_for("r2"))  # here's state is behind

    async def on_ticked(conn, envelope) -> None:
        await here.run(conn, "D-7", lambda d: d.answer("r5", envelope.payload["n"]))

    project_inline(schema, InlineProjection(consumer="test.inline", schema=schema, handler=on_ticked,
                                            event_types=frozenset({"test.Ticked"})))
    try:
        await producers.execute(pool, "P-7", lambda p: p.tick_below(4, cap=10), attempts=2)
    finally:
        forget_inline(schema)
    events = await store.load_stream(pool, "Desk", "D-7")
    assert [(e.type, e.payload.get("request_id")) for e in events] == \
        [("test.Awaited", "r1"), ("test.Awaited", "r2"), ("test.Answered", "r5")]
    reads = here.streams_read
    done = await here.execute(pool, "D-7", lambda d: d.answer("r3", 1))  # committed by the projection
    assert (done.aggregate.version, here.streams_read) == (4, reads)


async def test_a_stream_taken_to_be_new_is_not_read_and_one_that_exists_is_read_once_it_conflicts(pool, schema):
    """Repository.run(new=True) (shipping's first delivery of an order): decided on an empty
    state without a read; a stream that existed after all conflicts, and the owner's retry, and
    every later run in this process, read it."""
    store = EventStore(schema, "unused")
    desks = Repository(store, Desk)

    async def answer(desk_id: str, request_id: str) -> list:
        async with pool.acquire() as conn, db.transaction(conn):
            return await desks.run(conn, desk_id, lambda d: d.answer(request_id, 1), new=True)

    assert [e.sequence for e in await answer("D-new", "r1")] == [1]
    assert desks.streams_read == 0
    await Repository(store, Desk).execute(pool, "D-old", lambda d: d.answer("r0", 1))  # another instance's
    with pytest.raises(ConcurrencyConflict):
        await answer("D-old", "r1")
    assert [e.sequence for e in await answer("D-old", "r1")] == [2]  # the retry reads the stream
    assert desks.streams_read == 1
    desks._forget("D-old")  # its state pushed out of the cache: still known to exist
    assert [e.sequence for e in await answer("D-old", "r2")] == [3]
    assert [e.payload["request_id"] for e in await store.load_stream(pool, "Desk", "D-old")] == ["r0", "r1", "r2"]


# -- steps whose one write is the append (run_step(one_statement=True)) ---------------------
@contextlib.asynccontextmanager
async def logged_pool(stack, schema):
    """A pool of one connection on `schema`, and the statements it sends."""
    sent: list[str] = []
    async with schema_pool(stack, schema, max_size=1) as pool:
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append(" ".join(record.query.split())))
        yield pool, sent


def facts(reply) -> list[tuple]:
    return [(e["event_id"], e["sequence"], e["payload"]["request_id"], e["payload"]["n"]) for e in reply["events"]]


def transaction_control(sent: list[str]) -> list[str]:
    return [q for q in sent if q.split(" ", 1)[0].rstrip(";").upper() in ("BEGIN", "COMMIT", "ROLLBACK")]


async def test_a_one_statement_step_sends_its_append_alone_and_answers_as_a_transactional_one(stack, schema):
    async with logged_pool(stack, schema) as (pool, sent):
        store = CountingStore(schema)
        desks = Repository(store, Desk)
        await desks.execute(pool, "D-20", lambda d: d.answer("r0", 1))  # trusted from here
        sent.clear()
        reply = await run_step(pool, store, "Desk", "D-20", "r1", (Answered,),
                               running(desks, "D-20", lambda d: d.answer("r1", 2)), one_statement=True)
        assert [(e["payload"]["request_id"], e["sequence"]) for e in reply["events"]] == [("r1", 2)]
        assert len(sent) == 1 and "append_events" in sent[0], sent  # the append, no BEGIN/COMMIT
        # Called again: nothing recorded, answered with the first answer, still no transaction.
        sent.clear()
        again = await run_step(pool, store, "Desk", "D-20", "r1", (Answered,),
                               running(desks, "D-20", lambda d: d.answer("r1", 99)), one_statement=True)
        assert facts(again) == facts(reply) and transaction_control(sent) == []
        # The same step in a transaction answers alike, with its BEGIN and COMMIT.
        sent.clear()
        transactional = await run_step(pool, store, "Desk", "D-20", "r1", (Answered,),
                                       running(desks, "D-20", lambda d: d.answer("r1", 99)))
        assert facts(transactional) == facts(reply)
        assert [q.rstrip(";") for q in transaction_control(sent)] == ["BEGIN", "COMMIT"]


async def test_a_one_statement_step_on_a_stale_state_conflicts_and_answers_as_on_the_stream(stack, schema):
    async with logged_pool(stack, schema) as (pool, _):
        store = EventStore(schema, "unused")
        desks, elsewhere = Repository(store, Desk), Repository(store, Desk)
        await desks.execute(pool, "D-21", lambda d: d.answer("r0", 1))
        await elsewhere.execute(pool, "D-21", lambda d: d.answer("r1", 5))  # this process's copy is behind
        reply = await run_step(pool, store, "Desk", "D-21", "r1", (Answered,),
                               running(desks, "D-21", lambda d: d.answer("r1", 7)), one_statement=True)
        assert [(e["payload"]["n"], e["sequence"]) for e in reply["events"]] == [(5, 2)]  # the stream's answer
        assert [e.sequence for e in await store.load_stream(pool, "Desk", "D-21")] == [1, 2]


async def test_a_body_that_needs_a_transaction_runs_again_in_one(stack, schema):
    async with logged_pool(stack, schema) as (pool, sent):
        store = EventStore(schema, "unused")
        desks = Repository(store, Desk)
        in_transaction: list[bool] = []

        async def body(conn) -> None:  # as the cart's lock with a usage-limited coupon
            in_transaction.append(conn.is_in_transaction())
            if not conn.is_in_transaction():
                raise TransactionNeeded
            await conn.execute("SELECT 1 FROM events FOR UPDATE")
            await desks.run(conn, "D-22", lambda d: d.answer("r1", 3))

        reply = await run_step(pool, store, "Desk", "D-22", "r1", (Answered,), body, one_statement=True)
        assert in_transaction == [False, True]
        assert [e["payload"]["n"] for e in reply["events"]] == [3]
        assert [q.rstrip(";") for q in transaction_control(sent)] == ["BEGIN", "COMMIT"]


async def test_a_write_alongside_the_decision_rides_in_the_append_and_only_with_it(stack, schema):
    """Repository.run(alongside=...): the command's own write, given what was decided, in the
    append's statement; none when nothing was recorded; rolled back with a conflicting append."""
    async with logged_pool(stack, schema) as (pool, sent):
        await pool.execute("CREATE TABLE desk_notes (desk text, request text)")
        store = EventStore(schema, "unused")
        desks, elsewhere = Repository(store, Desk), Repository(store, Desk)

        def note(request_id: str):
            return lambda desk: Alongside("INSERT INTO desk_notes VALUES ($1, $2)", (desk.id, request_id)) \
                if desk.pending else None

        async def answer(request_id: str, n: int) -> list:
            async with pool.acquire() as conn:
                return await desks.run(conn, "D-23", lambda d: d.answer(request_id, n), alongside=note(request_id))

        await desks.execute(pool, "D-23", lambda d: d.answer("r0", 1))
        sent.clear()
        assert [e.sequence for e in await answer("r1", 2)] == [2]
        assert len(sent) == 1 and sent[0].startswith("WITH alongside AS (INSERT INTO desk_notes"), sent
        assert await answer("r1", 2) == []  # answered before: nothing recorded, nothing written alongside
        await elsewhere.execute(pool, "D-23", lambda d: d.answer("r2", 5))
        with pytest.raises(ConcurrencyConflict):  # behind the stream: the append and its note fail together
            await answer("r3", 1)
        assert [tuple(r) for r in await pool.fetch("SELECT * FROM desk_notes")] == [("D-23", "r1")]
