"""Waiting for what the system does in the background to settle."""
from __future__ import annotations

import asyncio
import time
from typing import Callable, TypeVar

T = TypeVar("T")


async def quiet(read: Callable[[], T], *, quiet_s: float = 1.0, timeout: float = 30,
                ready: Callable[[T], bool] = lambda _: True, what: str = "it") -> T:
    """`read()` once it is `ready` and has not changed for `quiet_s` (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while not ready(last) or time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"{what} never settled: {last!r}"
        await asyncio.sleep(0.1)
        if (now := read()) != last:
            last, since = now, time.monotonic()
    return last
