"""Fault injection for chaos tests: crash points and dropped messages.

Crash points kill -9 this process at a named step, once.

`TILLSTREAM_CRASH_AT="payment.after_gateway_call"` (comma-separated names) with
`TILLSTREAM_CRASH_MARKER_DIR` set arms them; the first time a process reaches an armed
point it leaves a marker file and SIGKILLs itself, exactly as a machine failure would,
in the middle of its transaction. Unset (always, in production) it does nothing.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path


def crash_point(name: str) -> None:
    armed = os.environ.get("TILLSTREAM_CRASH_AT")
    if not armed or name not in armed.split(","):
        return
    marker = Path(os.environ.get("TILLSTREAM_CRASH_MARKER_DIR", "/tmp")) / f"crashed-{name}"
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


def dropped(name: str) -> bool:
    """`TILLSTREAM_DROP_AT="saga.answer.payment.PaymentsProcessed"` (comma-separated names):
    the caller acts as if the named message never arrived. Unset it does nothing."""
    armed = os.environ.get("TILLSTREAM_DROP_AT")
    return bool(armed) and name in armed.split(",")


class InjectedFault(RuntimeError):
    """Raised where `TILLSTREAM_FAIL_AT` names the point: a handler that always fails."""


def fail_point(name: str) -> None:
    """`TILLSTREAM_FAIL_AT="payment.process_payments"`: raise there, every time (so the
    message is dead-lettered after its attempts). Unset it does nothing."""
    armed = os.environ.get("TILLSTREAM_FAIL_AT")
    if armed and name in armed.split(","):
        raise InjectedFault(f"injected failure at {name}")
