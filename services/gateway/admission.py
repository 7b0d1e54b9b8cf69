"""Admission control: at most GATEWAY_MAX_IN_FLIGHT public requests inside the system at
once per gateway process; the rest wait here, first come first served.

Why: past saturation, every request admitted adds to every queue behind the gateway
(service workers, database, broker, consumers), so work already in flight slows down,
event lag grows, and bounded waits inside the system (the order view's read-your-writes
wait) start to run out. Waiting at the edge is cheap and visible. A request that has
waited GATEWAY_QUEUE_TIMEOUT_MS without a slot is answered 503 with `Retry-After`, before
anything was done for it, so a storefront may safely send it again.

A request's body is read before it asks for a slot: a client that uploads slowly must
not hold a slot the system could use.
"""
from __future__ import annotations

import asyncio
import json

from shared import metrics
from shared.validation import MAX_BODY_BYTES

_BUSY = "The service is busy; please retry."
_TOO_LARGE = f"The request body is larger than {MAX_BODY_BYTES} bytes."


def _body(path: str, status: int, message: str) -> bytes:
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
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        # The body is read whole, and bounded, before anything else: with or without a limit
        # on requests in flight, no request body larger than MAX_BODY_BYTES gets further.
        received, size = [], 0
        while True:
            message = await receive()
            received.append(message)
            size += len(message.get("body", b""))
            if size > MAX_BODY_BYTES:
                await _answer(send, 413, _body(scope["path"], 413, _TOO_LARGE))
                return
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return received.pop(0) if received else await receive()

        if self._slots is None:
            await self.app(scope, replay, send)
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout_s)
        except TimeoutError:
            metrics.ADMISSION_SHED.inc()
            await _answer(send, 503, _body(scope["path"], 503, _BUSY), (b"retry-after", b"1"))
            return
        try:
            await self.app(scope, replay, send)
        finally:
            self._slots.release()


async def _answer(send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": body})
