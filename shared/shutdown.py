"""A process told to stop (SIGTERM) exits within a bound, whatever it was waiting for.

Stopping waits on things outside the process: the broker for a consumer's last offset commit
and a producer's flush, PostgreSQL for a pool's connections to be released, clients for their
requests to end. Any of them can take for ever (a coordinator that moved, a connection held by
a request that hangs), and a process that does not exit is not restarted by its supervisor.
So each wait is bounded by SHUTDOWN_TIMEOUT_MS (`bounded`, `close_pool`: past it, the pool's
connections are terminated), uvicorn stops waiting for open requests after it too, and once
the services start stopping a watchdog thread (`exit_if_still_running`) ends the process
after it, however its event loop is doing. What was not done then is what a crash leaves:
offsets committed up to the last commit (the messages since are redelivered and handled
idempotently), published outbox rows deleted by the next leader's relay.
"""
from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import Awaitable

import asyncpg

log = logging.getLogger("tillstream.shutdown")

# The exit status of a process the watchdog ended: it did stop, but not cleanly.
WATCHDOG_EXIT_STATUS = 70


async def bounded(what: str, awaitable: Awaitable, timeout_s: float) -> bool:
    """Await `awaitable` for at most `timeout_s`; whether it finished. Past the bound it is
    cancelled and left to end on its own: not awaited, since a wait that swallows its
    cancellation would hold the stop for ever (as `asyncio.wait_for` would). What it raised
    is logged, not raised: the rest of the stop goes on."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        log.warning("gave up waiting while stopping", extra={"fields": {"what": what, "after_s": timeout_s}})
        return False
    if task.cancelled():
        return False
    failure = task.exception()
    if failure is not None:
        log.warning("failed while stopping", extra={"fields": {"what": what, "error": repr(failure)}})
        return False
    return True


async def close_pool(pool: asyncpg.Pool, timeout_s: float, what: str = "pool") -> None:
    """Close `pool` gracefully (it waits for every connection to be released), or terminate
    its connections once `timeout_s` has passed."""
    if not await bounded(f"{what}.close", pool.close(), timeout_s):
        pool.terminate()


def whole_seconds(timeout_s: float) -> int:
    """`timeout_s` as uvicorn's `timeout_graceful_shutdown` takes it: whole seconds, at least 1."""
    return max(1, round(timeout_s))


def exit_if_still_running(timeout_s: float, what: str) -> threading.Timer:
    """From now on the process has `timeout_s` to exit: a daemon thread ends it then (status
    WATCHDOG_EXIT_STATUS), even if its event loop is stuck. `cancel()` the timer to disarm it."""
    def end() -> None:
        # A thread of its own: logging's handlers may be held by the stuck loop's thread.
        sys.stderr.write(f"tillstream: {what} had not stopped {timeout_s:g} s after it began: exiting\n")
        sys.stderr.flush()
        os._exit(WATCHDOG_EXIT_STATUS)

    timer = threading.Timer(timeout_s, end)
    timer.daemon = True
    timer.start()
    return timer
