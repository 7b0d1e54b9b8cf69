"""Admission control: at most GATEWAY_MAX_IN_FLIGHT public requests inside the system at
once per gateway process; the rest wait here, first come first served.

Why: past saturation, every request admitted adds to every queue behind the gateway
(service workers, database, broker, consumers), so work already in flight slows down,
event lag grows, and bounded waits inside the system (the order view's read-your-writes
wait) start to run out. Waiting at the edge is cheap and visible. A request that has
waited GATEWAY_QUEUE_TIMEOUT_MS without a slot is answered 503 with `Retry-After`, before
anything was done for it, so a storefront may safely send it again.

A request's body has been read before it asks for a slot (the body guard, installed
outside this layer: shared/http_limits.py): a client that uploads slowly must not hold a
slot the system could use.
"""
from __future__ import annotations

import asyncio
import json

from shared import metrics

_BUSY = "The service is busy; please retry."


def error_body(path: str, status: int, message: str) -> bytes:
    """The error in the dialect's shape: GetCandy's envelope under /api/v1, else Solidus's."""
    if path.startswith("/api/v1/"):
        return json.dumps({"error": {"http_code": status, "message": message}}).encode()
    return json.dumps({"error": message}).encode()


class AdmissionControl:
    def __init__(self, app, *, limit: int, queue_timeout_s: float, prefix: str = "/api") -> None:
        self.app = app
        self.queue_timeout_s = queue_timeout_s
        self.prefix = prefix
        self._slots = asyncio.Semaphore(limit) if limit > 0 else None

    async def __call__(self, scope, receive, send) -> None:
        if self._slots is None or scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
        except TimeoutError:
            metrics.ADMISSION_SHED.inc()
            await _answer(send, 503, error_body(scope["path"], 503, _BUSY), (b"retry-after", b"1"))
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._slots.release()


async def _answer(send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": body})
