"""uvicorn's httptools protocol with the limits a public gateway needs on its client side.

uvicorn bounds none of these with httptools: a connection that never sends a request head
is kept forever (slowloris), a head of any size is buffered (httptools keeps a header value
whole until it ends), and a client that goes away mid-request is only noticed by an
application that polls ``receive()``. This subclass adds, without a timer per request (timers
cost microseconds on the hot path):

- a request-head deadline: ``request_head_timeout_seconds`` from the connection to the end of
  its first head (408 if some of it came, else the connection is just closed); the heads of
  later requests on a kept-alive connection are bounded by uvicorn's keep-alive timer
  (``keep_alive_timeout_seconds`` after the previous response), left running until the head
  is complete instead of being cancelled by its first byte;
- head size and header count limits: 431, then close;
- a connection cap (``max_connections``): a JSON 503 written at once, then close;
- a lingering close when the answer goes out before the request is read to its end (413,
  431, 408, an early 401): the write side is shut, what still arrives is discarded for a
  moment, then the connection is closed. Closing at once would make the kernel reset the
  connection over the unread bytes, and many clients then lose the answer;
- cancel-on-disconnect: a handler registers its task through ``scope["extensions"]``
  (``DISCONNECT_EXTENSION``) and the task is cancelled when the client goes away before the
  response is complete, so an upstream call never outlives its client.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, NamedTuple

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway_app.config import ServerSettings

# The scope extension the data plane looks up; this module owns the name.
DISCONNECT_EXTENSION = "gateway.disconnect"
# Lingering close: how long, and how much, a refused client may keep sending before the close.
LINGER_SECONDS = 2.0
LINGER_MAX_BYTES = 16 * 1024 * 1024


class ClientLimits(NamedTuple):
    head_timeout: float
    max_header_bytes: int
    max_headers: int
    max_connections: int

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ClientLimits:
        return cls(
            server.request_head_timeout_seconds,
            server.max_header_bytes,
            server.max_headers,
            server.max_connections,
        )


class DisconnectWatch:
    """Per connection: the task of the request in progress, cancelled if the client leaves."""

    __slots__ = ("gone", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.gone = False

    def arm(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the protocol answers ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error_response(status: int, reason: str, message: str, code: str) -> bytes:
    body = b'{"error":{"message":"%s","type":"invalid_request_error","param":null,"code":"%s"}}' % (
        message.encode(),
        code.encode(),
    )
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body)
    )


_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}
_CODES = {408: "request_timeout", 431: "request_header_too_large", 503: "too_many_connections"}


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, limits: ClientLimits, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._head_timer: asyncio.TimerHandle | None = None  # the first head only
        self._in_head = True  # between the end of a response (or the connection) and a complete head
        self._head_bytes = 0  # bytes received since the current request head began
        self._watch = DisconnectWatch()
        self._lingering = 0  # bytes discarded since the lingering close began; 0: not lingering

    # --- connection ---------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self._limits.max_connections:
            self.transport = transport  # connection_lost still runs for this protocol
            message = (
                f"the gateway is at its limit of {self._limits.max_connections} connections; retry shortly"
            )
            transport.write(_error_response(503, _REASONS[503], message, _CODES[503]))
            transport.close()
            return
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        watch = self._watch
        if watch.task is not None and self.cycle is not None and not self.cycle.response_complete:
            watch.gone = True
            watch.task.cancel()
            watch.task = None
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_bytes:
            seconds = f"{self._limits.head_timeout:g}"
            self._refuse(408, f"the request head did not arrive within {seconds} s")
        else:
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        self._stop_head_timer()
        if not self.transport.is_closing():
            self.transport.write(_error_response(status, _REASONS[status], message, _CODES[status]))
            self._linger()

    def _linger(self) -> None:
        transport = self.transport
        self._lingering = 1
        self.flow.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if cycle is not None and cycle.more_body and not self.transport.is_closing():
            self._linger()  # answered before the request body was read: read no more of it
            return
        super().on_response_complete()

    # --- parsing ------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingering += len(data)
            if self._lingering > LINGER_MAX_BYTES:
                self.transport.close()
            return
        if self._in_head:
            self._head_bytes += len(data)
        elif self.cycle is None or self.cycle.response_complete:
            # The first bytes of the next request on a kept-alive connection: the keep-alive
            # timer keeps running until its head is complete (on_headers_complete).
            self._in_head = True
            self._head_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._refuse(refused.status, refused.message)
            else:
                self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            self.send_400_response("Upgrades are not supported.")
            return
        if self._in_head and self._head_bytes > self._limits.max_header_bytes:
            # Still in the head after this many bytes: refuse before buffering more of it.
            self._refuse(431, f"request head larger than {self._limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        limits = self._limits
        if len(self.headers) > limits.max_headers:
            raise _Refused(431, f"more than {limits.max_headers} request headers")
        if self._head_bytes > limits.max_header_bytes:
            # The head and part of the body may have come in one read: measure the head itself.
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > limits.max_header_bytes:
                raise _Refused(431, f"request head larger than {limits.max_header_bytes} bytes")
        self._in_head = False
        self._stop_head_timer()
        self._unset_keepalive_if_required()
        super().on_headers_complete()
        self.scope["extensions"] = {DISCONNECT_EXTENSION: self._watch}
        self._watch.gone = False


def protocol_factory(server: ServerSettings) -> Any:
    """The ``http`` argument of ``uvicorn.Config``."""
    return functools.partial(LimitedHttpToolsProtocol, limits=ClientLimits.from_settings(server))
