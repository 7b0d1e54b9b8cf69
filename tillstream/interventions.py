"""The operators' interventions that end what the system would otherwise wait for forever:
outbox rows the broker refused for good, and compensations nobody answers (cli.py presents
them; operations.py holds the rest of the toolkit)."""
from __future__ import annotations

from shared.outbox import release_parked
from tillstream.operations import connect, flag_sagas, service_schema


async def release_parked_rows(dsn: str, service: str, *, discard: bool, ids: list[int] | None) -> list[int]:
    """Publish a service's parked outbox rows again (or discard them): `ids`, or all of them."""
    schema = service_schema(service)
    conn = await connect(dsn)
    try:
        return await release_parked(conn, schema, discard=discard, ids=ids)
    finally:
        await conn.close()


async def force_saga_end(dsn: str, saga_or_order: str) -> list[dict]:
    """Stop waiting for a compensating completion's compensations (by saga id or order
    number): the next sweep fails it at once, through the Order as any failure, recording
    the compensations left unanswered (shared/saga.py). Running ones are not touched: they
    are aborted first (operations.abort_saga), so their compensations are at least sent."""
    return await flag_sagas(dsn, saga_or_order, "force_requested", status="compensating")
