"""A process told to stop exits within a bound, whatever it waits for (shared/shutdown.py):
a supervisor restarts only a process that has exited."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import asyncpg
import httpx
import pytest

from shared.db import create_pool
from shared.shutdown import WATCHDOG_EXIT_STATUS, bounded, close_pool
from tillstream.stack import free_port, wait_for_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def test_a_pool_whose_connection_is_never_released_is_terminated_once_the_bound_passes(stack, schema):
    pool = await create_pool(stack.settings(), schema, min_size=1, max_size=2)
    held = await pool.acquire()  # as a request that hangs would hold it
    started = time.monotonic()
    await close_pool(pool, 0.5)
    assert 0.4 < time.monotonic() - started < 3
    assert pool._closed  # asyncpg has no public "closed"
    with pytest.raises(asyncpg.InterfaceError):  # the held connection was terminated with it
        await held.fetchval("SELECT 1")


async def test_bounded_tells_whether_the_wait_finished_and_never_raises_what_it_raised():
    async def fails():
        raise RuntimeError("the broker is gone")

    assert await bounded("quick", asyncio.sleep(0), 1)
    assert not await bounded("stuck", asyncio.Event().wait(), 0.1)
    assert not await bounded("failing", fails(), 1)


async def test_bounded_does_not_wait_for_a_wait_that_swallows_its_cancellation():
    released = asyncio.Event()

    async def stubborn():  # as a retry loop that catches everything would
        while not released.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                pass

    task = asyncio.ensure_future(stubborn())
    checking = asyncio.ensure_future(bounded("stubborn", task, 0.2))
    try:
        done, _ = await asyncio.wait({checking}, timeout=3)
        assert done, "still waiting for it, as asyncio.wait_for would"
        assert checking.result() is False and not task.done()
    finally:
        released.set()
        await asyncio.wait({task, checking}, timeout=3)


def served(factory: str, port: int, shutdown_timeout_ms: int) -> subprocess.Popen:
    """`factory` (tests/helpers/stuck_app.py) served as every Tillstream process is."""
    env = {**os.environ, "SHUTDOWN_TIMEOUT_MS": str(shutdown_timeout_ms), "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "shared.http_server", f"tests.helpers.stuck_app:{factory}",
                             "--port", str(port), "--log-level", "warning"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_served_process_with_a_stop_that_never_ends_exits_after_sigterm_within_its_bound():
    port = free_port()
    proc = served("create_app", port, shutdown_timeout_ms=500)
    try:
        wait_for_port("127.0.0.1", port, 20, proc)
        assert httpx.get(f"http://127.0.0.1:{port}/up").status_code == 200
        # A request that never ends holds its connection open through the stop.
        hanging = subprocess.Popen([sys.executable, "-c", f"import httpx; httpx.get('http://127.0.0.1:{port}/hang',"
                                    " timeout=30)"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(15)  # open requests 0.5 s... the watchdog at 3 x 0.5 s
        took = time.monotonic() - sent
        _, err = proc.communicate()
        assert status == WATCHDOG_EXIT_STATUS, err.decode()
        assert 1.2 < took < 6, took
        assert b"had not stopped 1.5 s after it began: exiting" in err
        hanging.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_served_process_that_stops_cleanly_exits_at_once_by_its_signal_not_its_watchdog():
    port = free_port()
    proc = served("create_app_that_stops", port, shutdown_timeout_ms=2000)
    try:
        wait_for_port("127.0.0.1", port, 20, proc)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # uvicorn ends a clean stop by raising the signal it caught again: its default action.
        assert proc.wait(10) == -signal.SIGTERM
        assert time.monotonic() - sent < 3  # the watchdog would end it after 6 s, with status 70
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
