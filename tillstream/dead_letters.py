"""Dead-lettered messages, for operators (`tillstream dlq`, tillstream/cli_interventions.py):
each service's `dead_letters` table keeps a durable copy of a message its consumers gave up
on (the `<topic>.dlq` topics hold them too); one is published again, once its cause is fixed,
through its schema's outbox."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared.envelope import newest_message
from tillstream.operations import SERVICES, connect, service_schema


@dataclass
class DeadLetter:
    service: str
    id: int
    consumer: str
    topic: str
    partition: int
    offset: int
    key: str | None
    error: str
    attempts: int
    failed_at: datetime
    replayed_at: datetime | None
    value: bytes = b""
    headers: list | None = None


async def dead_letters(dsn: str, service: str | None = None, *, with_value: bool = False) -> list[DeadLetter]:
    conn = await connect(dsn)
    try:
        found = []
        for name in [service_schema(service)] if service else SERVICES:
            rows = await conn.fetch(f'SELECT * FROM "{name}".dead_letters ORDER BY id')
            found += [DeadLetter(service=name, id=r["id"], consumer=r["consumer"], topic=r["topic"],
                                 partition=r["partition"], offset=r["offset"], key=r["key"], error=r["error"],
                                 attempts=r["attempts"], failed_at=r["failed_at"], replayed_at=r["replayed_at"],
                                 value=_newest(r) if with_value else b"",
                                 headers=r["headers"] if with_value else None) for r in rows]
        return found
    finally:
        await conn.close()


def _newest(letter: asyncpg.Record) -> bytes:
    """A dead letter's message as it is shown: at its event's newest version."""
    return newest_message(bytes(letter["value"]), [(k, v.encode()) for k, v in letter["headers"]])[0]


async def replay_dead_letter(dsn: str, service: str, letter_id: int) -> DeadLetter:
    """Publish a dead-lettered message again to its original topic (through that
    schema's outbox, so it is durable), once its cause is fixed. Every consumer group of
    the topic sees it; the ones that handled it before skip it (idempotency)."""
    schema = service_schema(service)
    conn = await connect(dsn)
    try:
        async with conn.transaction():
            row = await conn.fetchrow(f'SELECT * FROM "{schema}".dead_letters WHERE id = $1 FOR UPDATE', letter_id)
            if row is None:
                raise LookupError(f"no dead letter {letter_id} in {schema}")
            original = [[k, v] for k, v in row["headers"] if not k.startswith("dlq_")]
            await conn.execute(f'INSERT INTO "{schema}".outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4)',
                               row["topic"], row["key"] or "", row["value"], original)
            await conn.execute(f'UPDATE "{schema}".dead_letters SET replayed_at = now() WHERE id = $1', letter_id)
            await conn.execute("SELECT pg_notify($1, '')", f"{schema}_outbox")
    finally:
        await conn.close()
    return next(d for d in await dead_letters(dsn, service) if d.id == letter_id)


async def purge_dead_letters(dsn: str, service: str, *, letter_id: int | None, replayed_only: bool) -> int:
    schema = service_schema(service)
    conn = await connect(dsn)
    try:
        if letter_id is not None:
            result = await conn.execute(f'DELETE FROM "{schema}".dead_letters WHERE id = $1', letter_id)
        elif replayed_only:
            result = await conn.execute(f'DELETE FROM "{schema}".dead_letters WHERE replayed_at IS NOT NULL')
        else:
            result = await conn.execute(f'DELETE FROM "{schema}".dead_letters')
        return int(result.split()[-1])
    finally:
        await conn.close()
