"""Crash points for chaos tests: kill -9 this process at a named step, once.

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
