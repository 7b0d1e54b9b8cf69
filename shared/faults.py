"""Fault injection for chaos tests: crash points, dropped messages, failing and held steps.

Each is armed either by an environment variable when the process starts, or, while it runs,
by a file in `TILLSTREAM_FAULTS_DIR` (`drop-<name>`, `fail-<name>`, `hold-<name>`), so a
test can arm and disarm one without restarting anything. Nothing here does anything unless
`TILLSTREAM_CHAOS=true`: a process started with any of these variables and not that flag
refuses to start (shared/safety.py), and one with the flag says so in its log.

Crash points kill -9 this process at a named step, once: `TILLSTREAM_CRASH_AT=
"payment.after_gateway_call"` (comma-separated names) with `TILLSTREAM_CRASH_MARKER_DIR`
set; the first time a process reaches an armed point it leaves a marker file and SIGKILLs
itself, exactly as a machine failure would, in the middle of its transaction.
"""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path


def _chaos() -> bool:
    return os.environ.get("TILLSTREAM_CHAOS", "").strip().lower() in ("1", "true", "yes")


def _armed(variable: str, kind: str, name: str) -> bool:
    if not _chaos():
        return False
    names = os.environ.get(variable)
    if names and name in names.split(","):
        return True
    folder = os.environ.get("TILLSTREAM_FAULTS_DIR")
    if not folder:
        return False
    return (Path(folder) / f"{kind}-{name}").exists()


def crash_point(name: str) -> None:
    armed = os.environ.get("TILLSTREAM_CRASH_AT")
    if not armed or name not in armed.split(",") or not _chaos():
        return
    marker = Path(os.environ.get("TILLSTREAM_CRASH_MARKER_DIR", "/tmp")) / f"crashed-{name}"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def dropped(name: str) -> bool:
    """`TILLSTREAM_DROP_AT="saga.answer.payment.PaymentsProcessed"` (or a `drop-<name>` file):
    the caller acts as if the named message never arrived."""
    return _armed("TILLSTREAM_DROP_AT", "drop", name)


class InjectedFault(RuntimeError):
    """Raised where a fail point is armed: a handler that always fails."""


def fail_point(name: str) -> None:
    """`TILLSTREAM_FAIL_AT="payment.process_payments"` (or a `fail-<name>` file): raise there,
    every time (so the message is dead-lettered after its attempts)."""
    if _armed("TILLSTREAM_FAIL_AT", "fail", name):
        raise InjectedFault(f"injected failure at {name}")


async def hold_point(name: str) -> None:
    """While a `hold-<name>` file exists, wait here (a step held still, to look at the rest)."""
    while _armed("TILLSTREAM_HOLD_AT", "hold", name):
        await asyncio.sleep(0.05)
