"""What a connection and a request may cost a Tillstream process before it is answered:
bounds read from the environment, and the request-body guard every app runs first.

A client that sends slowly must pay for it, not the server. The limits below are in two
places because uvicorn calls an app only once a request's headers are complete:
- the connection, the header deadline and the header size: shared/http_server.py, the
  protocol every Tillstream process serves HTTP with;
- the body deadline, the body size and the bytes buffered across the requests in flight:
  `BodyGuard` here, an ASGI layer that reads each body whole before anything else runs.
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Callable

# The error body in the caller's shape: (path, status, message) -> JSON bytes.
Render = Callable[[str, int, str], bytes]


def _ms(name: str, default: int) -> float:
    return int(os.environ.get(name, default)) / 1000


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 20.0
    max_connections: int = 1000
    max_buffered_bytes: int = 64 * 1024 * 1024
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_env(cls) -> "HttpLimits":
        return cls(header_timeout_s=_ms("HTTP_HEADER_TIMEOUT_MS", 10_000),
                   body_timeout_s=_ms("HTTP_BODY_TIMEOUT_MS", 20_000),
                   max_connections=int(os.environ.get("HTTP_MAX_CONNECTIONS", 1000)),
                   max_buffered_bytes=int(os.environ.get("HTTP_MAX_BUFFERED_BYTES", 64 * 1024 * 1024)),
                   max_header_bytes=int(os.environ.get("HTTP_MAX_HEADER_BYTES", 64 * 1024)))


def internal_error_body(path: str, status: int, message: str) -> bytes:
    """The shape of a service's own refusals (what shared/rpc.py:remote reads back)."""
    code = {408: "request_timeout", 413: "too_large", 503: "busy"}.get(status, "bad_request")
    return json.dumps({"code": code, "message": message, "details": {}}).encode()


class BodyGuard:
    """Reads a request's body whole, within `HTTP_BODY_TIMEOUT_MS` of its headers (408
    otherwise), within `max_body_bytes` under `capped_prefix` (413), and only while the
    bodies held by this process's requests in flight stay within `HTTP_MAX_BUFFERED_BYTES`
    (503 with `Retry-After` otherwise, before anything was done for the request). The body
    then counts until the request has been answered, since the app holds it until then."""

    def __init__(self, app, *, render: Render = internal_error_body, limits: HttpLimits | None = None,
                 max_body_bytes: int | None = None, capped_prefix: str = "/") -> None:
        self.app = app
        self.render = render
        self.limits = limits or HttpLimits.from_env()
        self.max_body_bytes = max_body_bytes
        self.capped_prefix = capped_prefix
        self.buffered = 0  # bytes of request bodies this process holds right now

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.max_body_bytes if scope["path"].startswith(self.capped_prefix) else None
        received: list[dict] = []
        held = [0]  # what this request reserved of `buffered`, given back however it ends
        try:
            refusal = await self._read(receive, received, held, cap)
            if refusal is not None:
                status, message = refusal
                retry = [(b"retry-after", b"1")] if status == 503 else []
                # The client may still be sending: the connection ends with the answer.
                await answer(send, self.render(scope["path"], status, message), status, *retry, close=True)
                return

            async def replay():
                return received.pop(0) if received else await receive()

            await self.app(scope, replay, send)
        finally:
            self.buffered -= held[0]

    async def _read(self, receive, received: list[dict], held: list[int], cap: int | None) -> tuple[int, str] | None:
        """Reads into `received`, reserving each chunk's bytes; the refusal, if any."""
        size = 0
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                while True:
                    message = await receive()
                    chunk = len(message.get("body", b""))
                    size += chunk
                    if cap is not None and size > cap:
                        return 413, f"The request body is larger than {cap} bytes."
                    if chunk and self.buffered + chunk > self.limits.max_buffered_bytes:
                        return 503, "The service is busy; please retry."
                    self.buffered += chunk
                    held[0] += chunk
                    received.append(message)
                    if message["type"] != "http.request" or not message.get("more_body"):
                        return None
        except TimeoutError:
            return 408, f"The request body took longer than {self.limits.body_timeout_s:g} s to arrive."


async def answer(send, body: bytes, status: int, *headers: tuple[bytes, bytes], close: bool = False) -> None:
    """A JSON error answer; `close` ends the connection with it."""
    closing = [(b"connection", b"close")] if close else []
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *closing, *headers]})
    await send({"type": "http.response.body", "body": body})
