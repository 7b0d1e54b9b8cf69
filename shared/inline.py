"""Inline projections (issue #26.1): a subscriber of a store applied in the transaction (or
the very statement) that appends to the store, when the process hosts both services
(tillstream/host.py wires them, shared/service.py `project_inline_where_hosted`), and what a
consumer recorded in this process without its Kafka consumer (`applied_here`), so that consumer
passes those events over. shared/eventstore.py applies them in its appends."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

import asyncpg

from shared import context, metrics
from shared.db import check_identifier
from shared.envelope import EventEnvelope


@dataclass(frozen=True)
class InlineStatement:
    """An inline projection's one-statement form: `changes` tells its read model's changes for
    a store's new events without reading (None when it cannot: its handler runs instead), and
    the subscriber's SQL function `function(consumer text, event_ids uuid[], changes jsonb)`
    records the events as the consumer's and applies the changes, inside the append's own
    statement (no search_path switch, no BEGIN/COMMIT of its own). With `premised` (an append
    outside a transaction, which can be run again), the changes may rest on a premise the
    function checks, failing the statement with SQLSTATE PREMISE_FAILED when it does not hold:
    then nothing was stored, and the append runs the handler instead."""
    changes: Callable[[list[EventEnvelope], bool], Awaitable[list | None]]
    function: str
    # In the producer's transaction (not `premised`): what the subscriber decides on the events
    # besides its read model, run on the transaction's connection before the append that carries
    # the changes (the Order's answer to shipping's): bound to the subscriber's context when wired.
    before: Callable[..., Awaitable[None]] | None = None


# What an InlineStatement's function raises when a premise of its changes does not hold.
PREMISE_FAILED = "TS001"


@dataclass(frozen=True)
class InlineProjection:
    """A subscriber of a store's topic applied in the transaction that appends to the store,
    when the process hosts both (tillstream/host.py): what its Kafka consumer would do a
    moment later, done before the command answers. Its processed-events record (`consumer`,
    in its own `schema`) is written with it, so that consumer passes the events over when
    they arrive; a handler that raises fails the command. With a `statement` form that can
    tell its changes, it rides in the append's own statement instead of running its handler."""
    consumer: str
    schema: str
    handler: Callable[[asyncpg.Connection, EventEnvelope], Awaitable[None]]
    event_types: frozenset[str] | None = None  # None: every event of the store
    statement: InlineStatement | None = None


# An inline projection's part of one append statement: the projection, its events, its changes.
Riding = tuple[InlineProjection, list[EventEnvelope], list]


# The inline projections of each store (by schema) in this process.
PROJECTIONS: dict[str, list[InlineProjection]] = {}
# The event ids each consumer recorded lately in this process without its Kafka consumer (an
# inline projection, or the saga recording a call's reply): that consumer passes them over
# without a transaction to find its record (after a restart, when this is empty, the record
# is still found). An inline projection adds them before the commit: an event whose
# transaction rolled back is never published, so it is never looked up.
_applied_here: dict[str, OrderedDict[str, None]] = {}
APPLIED_HERE_REMEMBERED = 20_000


def applied_here(consumer: str, event_id: str) -> bool:
    remembered = _applied_here.get(consumer)
    return remembered is not None and event_id in remembered


def remember_applied(consumer: str, event_ids: list[str]) -> None:
    """`consumer` has recorded these events in this process (inline, or from a call's reply)."""
    remembered = _applied_here.setdefault(consumer, OrderedDict())
    for event_id in event_ids:
        remembered[event_id] = None
    while len(remembered) > APPLIED_HERE_REMEMBERED:
        remembered.popitem(last=False)


def project_inline(store_schema: str, projection: InlineProjection) -> None:
    """Apply `projection` to every append of `store_schema`'s store made in this process; the
    same consumer wired again (a host started twice in one process) replaces its earlier self."""
    wired = [p for p in PROJECTIONS.get(store_schema, []) if p.consumer != projection.consumer]
    PROJECTIONS[store_schema] = [*wired, projection]


def projected_inline(consumer: str, store_schema: str) -> bool:
    """Whether `consumer` applies every append of `store_schema`'s store in this process."""
    return any(p.consumer == consumer and p.event_types is None for p in PROJECTIONS.get(store_schema, ()))


def forget_inline(store_schema: str) -> None:
    PROJECTIONS.pop(store_schema, None)


async def apply_handlers(conn: asyncpg.Connection, projections: list[InlineProjection],
                        envelopes: Sequence[EventEnvelope]) -> bool:
    """Each projection's handler runs with its own schema as the search_path (set for the
    transaction only, with its processed-events record in one round trip), as it does on its
    own service's connections. True if one ran: the append that follows puts the connection's
    own search_path back in its statement. A handler that raises aborts the transaction, which
    undoes the change too."""
    applied = False
    for projection in projections:
        wanted = [e for e in envelopes if projection.event_types is None or e.type in projection.event_types]
        if not wanted:
            continue
        await conn.execute(
            f'WITH recorded AS (INSERT INTO "{projection.schema}".processed_events (consumer, event_id)'
            " SELECT $1, unnest($2::uuid[]) RETURNING 1)"
            " SELECT set_config('search_path', $3, true), (SELECT count(*) FROM recorded)",
            projection.consumer, [e.event_id for e in wanted], check_identifier(projection.schema))
        applied = True
        for envelope in wanted:
            with context.caused_by(envelope.correlation_id, str(envelope.event_id)):
                await projection.handler(conn, envelope)
        remember_applied(projection.consumer, [str(e.event_id) for e in wanted])
        metrics.CONSUMED.labels(projection.consumer, "inline").inc(len(wanted))
    return applied


async def riding(projections: list[InlineProjection], envelopes: list[EventEnvelope], *,
                  premised: bool) -> list[Riding] | None:
    """The projections that want these events, each with its changes, if all of them can ride
    in the append's statement (InlineStatement); None if one has to run its handler."""
    riding: list[Riding] = []
    for projection in projections:
        wanted = [e for e in envelopes if projection.event_types is None or e.type in projection.event_types]
        if not wanted:
            continue
        changes = (await projection.statement.changes(wanted, premised) if projection.statement is not None
                   else None)
        if changes is None:
            return None
        riding.append((projection, wanted, changes))
    return riding


async def before_riding(conn: asyncpg.Connection, riding: list[Riding]) -> None:
    """Each riding projection's `before`, in the producer's transaction, before its append."""
    for projection, wanted, _ in riding:
        if projection.statement is not None and projection.statement.before is not None:
            await projection.statement.before(conn, wanted)


def riding_statement(append_statement: str, riding: list[Riding]) -> str:
    """`append_statement` after each riding projection's function, in that order: each part is
    LATERAL to the one before it, so the read model's rows are written before the append takes
    its store's table lock (the order everywhere: shared/eventstore.py `append`)."""
    parts, before = [], None
    for i, (projection, _, _) in enumerate(riding):
        assert projection.statement is not None
        function = f'"{check_identifier(projection.schema)}".{check_identifier(projection.statement.function)}'
        after = f" WHERE {before}.applied" if before else ""
        parts.append(f"{'CROSS JOIN LATERAL ' if before else ''}(SELECT {function}(${17 + 3 * i}, ${18 + 3 * i},"
                     f" ${19 + 3 * i}) AS applied{after}) AS ride{i}")
        before = f"ride{i}"
    return (f"SELECT appended.position, appended.event_id FROM {' '.join(parts)}"
            f" CROSS JOIN LATERAL ({append_statement} WHERE {before}.applied) AS appended")


def rode(riding: list[Riding]) -> None:
    for projection, wanted, _ in riding:
        remember_applied(projection.consumer, [str(e.event_id) for e in wanted])
        metrics.CONSUMED.labels(projection.consumer, "inline").inc(len(wanted))
