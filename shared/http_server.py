"""How every Tillstream process serves HTTP: uvicorn, with a protocol that bounds what a
connection may cost before its request reaches the app.

    python -m shared.http_server services.gateway.app:create_app --host 0.0.0.0 --port 8000

uvicorn starts no clock before a request's headers are complete (its keep-alive timeout
runs only between requests), so a client that sends half a header line, or trickles one
byte at a time, held a connection and the parser's buffer for ever. `GuardedHttpProtocol`
adds, per connection:
- a header deadline (`HTTP_HEADER_TIMEOUT_MS`) from the connection's first moment, and from
  the first byte of each later request on it: past it, 408 and the connection is closed;
- a header size bound (`HTTP_MAX_HEADER_BYTES`): 431 and closed;
- a connection limit (`HTTP_MAX_CONNECTIONS`): a connection past it is answered 503 with
  `Retry-After` at once and closed, before it costs a parser.
The body's deadline and the bytes buffered across requests are the app's first layer
(shared/http_limits.py's `BodyGuard`), where the request's dialect can shape the answer.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared import shutdown
from shared.http_limits import HttpLimits
from shared.settings import load_settings

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}


def raw_answer(status: int, message: str, *headers: bytes) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, written before any app runs."""
    body = json.dumps({"error": message}).encode()
    head = [b"HTTP/1.1 %d %s" % (status, _REASONS[status]), b"content-type: application/json",
            b"content-length: %d" % len(body), b"connection: close", *headers]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class LingeringTransport:
    """A connection's transport whose `close()` first lets the client read our last answer.

    Closing a socket that still has unread input makes the kernel send a reset, and the
    client's kernel may then drop our answer before it is read: exactly the case of a slow
    client cut off mid-request, still sending. So: send what is buffered and a FIN
    (`write_eof`), read and discard whatever still comes, and close for good once the
    client closes or LINGER_S has passed."""

    LINGER_S = 1.0

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self.lingering = False

    def __getattr__(self, name: str):
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        self.lingering = True
        try:
            self._transport.write_eof()
            self._transport.resume_reading()
        except (OSError, RuntimeError, NotImplementedError):
            self._transport.close()
            return
        self._loop.call_later(self.LINGER_S, self._transport.close)


class GuardedHttpProtocol(HttpToolsProtocol):
    limits = HttpLimits()  # replaced by `serve` with the process's own

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._header_clock: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._refused = False

    def connection_made(self, transport) -> None:
        transport = LingeringTransport(transport, self.loop)
        if len(self.connections) >= self.limits.max_connections:
            self._refused = True
            self.transport = transport
            transport.write(raw_answer(503, "Too many connections; please retry.", b"retry-after: 1"))
            transport.close()
            return
        super().connection_made(transport)
        self._start_header_clock()

    def connection_lost(self, exc) -> None:
        self._stop_header_clock()
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or getattr(self.transport, "lingering", False):
            return  # a closing connection's input is read only to be dropped
        clock = self._header_clock
        super().data_received(data)
        if clock is not None and self._header_clock is clock and not self.transport.is_closing():
            # Inside the same request's headers before and after this chunk: it all counts.
            # A chunk in which headers ended or began is not counted, so a body before or
            # after them never looks like headers (the bound is then passed by one chunk at most).
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._end(431, f"The request's headers are larger than {self.limits.max_header_bytes} bytes.")

    def send_400_response(self, msg: str) -> None:
        """What the parser refuses (a control character in a header, a malformed request
        line) is answered in JSON like every other refusal, not uvicorn's plain text."""
        self._end(400, msg)

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_clock is None:  # a later request on a kept-alive connection
            self._start_header_clock()

    def on_headers_complete(self) -> None:
        self._stop_header_clock()
        super().on_headers_complete()

    def _start_header_clock(self) -> None:
        self._header_bytes = 0
        self._header_clock = self.loop.call_later(self.limits.header_timeout_s, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        if self._header_clock is not None:
            self._header_clock.cancel()
            self._header_clock = None

    def _headers_too_slow(self) -> None:
        self._header_clock = None
        self._end(408, f"The request's headers took longer than {self.limits.header_timeout_s:g} s to arrive.")

    def _end(self, status: int, message: str) -> None:
        self._stop_header_clock()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # no answer under way: one can be sent
            self.transport.write(raw_answer(status, message))
        self.transport.close()


def guarded_protocol() -> type[GuardedHttpProtocol]:
    """The protocol class for this process's listeners, bounded by its HTTP_* settings."""
    return type("ProcessHttpProtocol", (GuardedHttpProtocol,), {"limits": HttpLimits.from_env()})


class StoppingServer(uvicorn.Server):
    """uvicorn's server, which exits within a bound of being told to stop (shared/shutdown.py):
    open requests get SHUTDOWN_TIMEOUT_MS, the app's stop (each of its waits bounded by the
    same) twice that, and past both a watchdog thread ends the process."""

    def __init__(self, config: uvicorn.Config, shutdown_timeout_s: float) -> None:
        super().__init__(config)
        self.shutdown_timeout_s = shutdown_timeout_s
        self.watchdog: threading.Timer | None = None

    def handle_exit(self, sig, frame) -> None:
        if self.watchdog is None:
            self.watchdog = shutdown.exit_if_still_running(3 * self.shutdown_timeout_s, "the process")
        super().handle_exit(sig, frame)


def serve(factory: str, host: str, port: int, *, log_level: str = "info", access_log: bool = True) -> None:
    protocol = guarded_protocol()
    timeout_s = load_settings().shutdown_timeout_s
    StoppingServer(uvicorn.Config(factory, factory=True, host=host, port=port, http=protocol,
                                  log_level=log_level, access_log=access_log,
                                  timeout_graceful_shutdown=shutdown.whole_seconds(timeout_s),
                                  # More than this waiting in the kernel is refused there.
                                  backlog=min(2048, protocol.limits.max_connections)), timeout_s).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a Tillstream app factory over bounded HTTP.")
    parser.add_argument("factory", help="module:function returning the ASGI app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)
    serve(args.factory, args.host, args.port, log_level=args.log_level, access_log=not args.no_access_log)


if __name__ == "__main__":
    main()
