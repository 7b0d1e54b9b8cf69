"""Counting the statements the system sends, as pg_stat_statements keeps them (the test stack
preloads it; on a database that does not, the tests that count are skipped)."""
from __future__ import annotations

import pytest


async def counting_statements(conn) -> None:
    """Skip the test unless the database keeps pg_stat_statements; make its view available."""
    if "pg_stat_statements" not in await conn.fetchval("SELECT current_setting('shared_preload_libraries')"):
        pytest.skip("the database does not load pg_stat_statements")
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


async def calls(conn, query: str, *, exact: bool = False) -> int:
    """How often the statements whose text is `query` (`exact`) or matches it (LIKE) ran, in all processes."""
    return int(await conn.fetchval(
        f"SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query {'=' if exact else 'LIKE'} $1", query))
