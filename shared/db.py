"""PostgreSQL access: a pool per service schema, and versioned SQL migrations.

Each service owns one schema; its pool sets `search_path` to it, so service SQL names
tables without a schema prefix.

Work that may be done only once a transaction has committed (the repository trusting a state
saved inside it: shared/aggregate.py) is registered with `on_commit` from inside it; the block
that owns the transaction (`transaction`, `transaction_opened_by`) runs it after its COMMIT
and drops it on rollback. A transaction whose owner does not listen runs none of it.
"""
from __future__ import annotations

import json
import logging
import re
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, NamedTuple

import asyncpg

from shared.settings import Settings

log = logging.getLogger(__name__)

PLATFORM_MIGRATIONS = Path(__file__).parent / "sql"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# One lock for every schema: CREATE SCHEMA and catalog changes from several instances
# starting at once then never race each other.
_MIGRATION_LOCK_KEY = 0x7111_5EED

# What a database that is down, restarting or out of connections raises: an outage the
# caller may retry (503 with Retry-After), not a failure of the request.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError)


def check_identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return name


async def _init_connection(conn: asyncpg.Connection) -> None:
    for pg_type in ("json", "jsonb"):
        await conn.set_type_codec(pg_type, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(dsn: str, schema: str, **server_settings: str) -> asyncpg.Connection:
    """A single connection (for LISTEN or advisory locks held for a process's life)."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": check_identifier(schema), **server_settings})
    await _init_connection(conn)
    return conn


class PooledConnection(asyncpg.Connection):
    """Released to the pool without the default reset query (UNLISTEN, RESET ALL, advisory
    unlock, CLOSE ALL: one more round trip per acquire). Pool connections keep no session
    state: LISTEN and session advisory locks live on dedicated connections (`connect`).
    An open transaction is still rolled back by asyncpg on release."""

    def get_reset_query(self) -> str:
        return ""


def literal(value: object) -> str:
    """`value` as an SQL string literal (standard_conforming_strings, PostgreSQL's default)."""
    return "'" + str(value).replace("'", "''") + "'"


# What the blocks owning transactions collect: (the connection, what to run once its open
# transaction commits), registered by the code inside them.
_on_commit: ContextVar[list[tuple[asyncpg.Connection, Callable[[], None]]] | None] = \
    ContextVar("on_commit", default=None)


def on_commit(conn: asyncpg.Connection, callback: Callable[[], None]) -> bool:
    """Run `callback` once `conn`'s open transaction commits (never if it rolls back), when
    the block owning it listens; False (and never run) when none does."""
    listening = _on_commit.get()
    if listening is None or not conn.is_in_transaction():
        return False
    listening.append((conn, callback))
    return True


@asynccontextmanager
async def _committing(conn: asyncpg.Connection, *, owner: bool = True) -> AsyncIterator[None]:
    """Around the block that owns `conn`'s transaction, its COMMIT included: what was
    registered for `conn` within it runs once it ends without raising; what was registered
    for other connections (a block that owns no transaction of theirs) goes to the block
    around it. Not the `owner` (a savepoint): what it registered for `conn` goes to the block
    around it too, unless it raised (then it was undone)."""
    registered: list[tuple[asyncpg.Connection, Callable[[], None]]] = []
    outer = _on_commit.get()
    token = _on_commit.set(registered)
    committed = False
    try:
        yield
        committed = True
    finally:
        _on_commit.reset(token)
        if outer is not None:
            outer.extend(entry for entry in registered if entry[0] is not conn or (committed and not owner))
    if committed and owner:
        for registered_on, callback in registered:
            if registered_on is conn:
                callback()


@asynccontextmanager
async def transaction(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """`conn.transaction()` (not nested in another), then what was registered with `on_commit`
    inside it, once it committed."""
    async with _committing(conn), conn.transaction():
        yield


@asynccontextmanager
async def transaction_opened_by(conn: asyncpg.Connection, statement: str) -> AsyncIterator[str]:
    """A transaction whose `BEGIN` travels with its first statement in one round trip,
    yielding that statement's status (e.g. `INSERT 0 1`); committed when the block ends,
    rolled back if it raises.

    The two go as one simple query, which takes no parameters: build `statement` with
    `literal`. asyncpg's `conn.transaction()` cannot be nested in it; use `savepoint`.
    What was registered with `on_commit` inside it runs once it committed.
    """
    async with _committing(conn), _opened_by(conn, statement) as status:
        yield status


@asynccontextmanager
async def _opened_by(conn: asyncpg.Connection, statement: str) -> AsyncIterator[str]:
    try:
        status = await conn.execute("BEGIN; " + statement)
    except BaseException:
        await _roll_back(conn)
        raise
    try:
        yield status
    except BaseException:
        await _roll_back(conn)
        raise
    # A failed statement the block swallowed leaves the transaction aborted, and PostgreSQL
    # answers COMMIT with ROLLBACK: that is a failure, not a success.
    if (outcome := await conn.execute("COMMIT")) != "COMMIT":
        raise TransactionRolledBack(f"COMMIT answered {outcome}")


class TransactionRolledBack(Exception):
    """The transaction was rolled back at COMMIT (a failure inside it was swallowed)."""


async def _roll_back(conn: asyncpg.Connection) -> None:
    # The error being handled is the one to report: a connection that cannot roll back is
    # broken, and the pool discards it (and rolls back whatever it finds open on release).
    if not conn.is_closed() and conn.is_in_transaction():
        try:
            await conn.execute("ROLLBACK")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("rollback failed; the pool will discard the connection", exc_info=True)


@asynccontextmanager
async def savepoint(conn: asyncpg.Connection, name: str = "step") -> AsyncIterator[None]:
    """Undo only this block's writes if it raises (inside any transaction)."""
    check_identifier(name)
    await conn.execute(f"SAVEPOINT {name}")
    try:
        async with _committing(conn, owner=False):  # what the block registered is dropped if it is undone
            yield
    except BaseException:
        await conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
        raise
    await conn.execute(f"RELEASE SAVEPOINT {name}")


async def create_pool(settings: Settings, schema: str, *, min_size: int | None = None,
                      max_size: int | None = None) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        settings.require_database_url(),
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max if max_size is None else max_size,
        server_settings={"search_path": check_identifier(schema)},
        init=_init_connection,
        connection_class=PooledConnection,
    )


def migration_files(service_migrations: Path | None) -> list[tuple[str, Path]]:
    files = [(f"platform/{p.stem}", p) for p in sorted(PLATFORM_MIGRATIONS.glob("*.sql"))]
    if service_migrations is not None and service_migrations.is_dir():
        files += [(f"service/{p.stem}", p) for p in sorted(service_migrations.glob("*.sql"))]
    return files


async def migrate(dsn: str, schema: str, service_migrations: Path | None = None) -> list[str]:
    """Apply pending migrations to `schema`; safe when several instances start at once."""
    check_identifier(schema)
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations ('
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')}
            for version, path in migration_files(service_migrations):
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                    await conn.execute(path.read_text())
                    await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
                applied.append(version)
                log.info("migration applied", extra={"fields": {"schema": schema, "version": version}})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied


async def upsert(conn: asyncpg.Connection, table: str, row: dict, *, key: tuple[str, ...] = ("id",)) -> None:
    """Insert `row`, or update it where `key` already exists (reference data loads)."""
    columns = [check_identifier(c) for c in row]
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key) or f"{key[0]} = EXCLUDED.{key[0]}"
    await conn.execute(
        f"INSERT INTO {check_identifier(table)} ({', '.join(columns)})"
        f" VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))})"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}", *row.values())


class Upsert(NamedTuple):
    """A row of reference data for `upsert_all`: its table, its values, the columns naming it."""
    table: str
    row: dict[str, Any]
    key: tuple[str, ...] = ("id",)


async def upsert_all(pool: asyncpg.Pool, rows: Iterable[Upsert]) -> None:
    """An admin load of reference data (demo data, imports): every row upserted in one
    transaction. `rows` may validate its items as it goes: one refused leaves nothing behind."""
    async with pool.acquire() as conn, conn.transaction():
        for table, row, key in rows:
            await upsert(conn, table, row, key=key)
