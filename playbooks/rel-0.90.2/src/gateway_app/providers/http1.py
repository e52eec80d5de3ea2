"""A small HTTP/1.1 client for upstream calls: keep-alive pools, streamed bodies, backpressure.

Built on ``asyncio.Protocol`` and httptools' response parser because the general-purpose
client it replaces cost several times the CPU per upstream call. It does only what the
gateway needs: send one request with a body, read the head, then hand the body over as it
arrives. Connections are pooled per origin (scheme, host, port), reused last-in first-out,
and capped; callers beyond the cap wait in a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

# Unconsumed body bytes that pause reading from the socket until the consumer catches up.
READ_LIMIT = 1 << 20
# Callers queued for a connection of a full pool; beyond this they fail at once (another route may serve).
MAX_WAITERS = 1024


class HTTP1Error(Exception):
    """The exchange failed below HTTP; ``reason`` names what happened, without secrets."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class ConnectError(HTTP1Error):
    """No connection could be opened (refused, unresolvable, TLS failure, pool full or closed)."""


class ConnectionLostError(HTTP1Error):
    """The server closed the connection or broke the protocol before the response was complete."""

    def __init__(self, reason: str, answered: bool):
        super().__init__(reason)
        # Whether any byte of the response arrived: if none did on a reused connection,
        # the server dropped it while idle and never saw the request.
        self.answered = answered


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class Target(NamedTuple):
    origin: Origin
    host_header: str
    path: str


def parse_url(url: str) -> Target:
    """Split an http(s) URL; ValueError says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    default_port = 443 if parts.scheme == "https" else 80
    port = parts.port or default_port
    host_header = parts.netloc.rpartition("@")[2]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(Origin(parts.scheme, parts.hostname, port), host_header, path)


def header_line(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} contains a line break")
    return f"{name}: {value}\r\n".encode("latin-1")


def request_head(path: str, host_header: str, headers: list[tuple[str, str]]) -> bytes:
    """The static part of a POST request head; ``with_body`` completes it."""
    lines = [f"POST {path} HTTP/1.1\r\n".encode("latin-1"), header_line("Host", host_header)]
    lines += [header_line(name, value) for name, value in headers]
    lines.append(b"Accept-Encoding: identity\r\nConnection: keep-alive\r\n")
    return b"".join(lines)


def with_body(head: bytes, body: bytes) -> bytes:
    return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)


class Response:
    """One exchange on one connection: the parser's callback target and the caller's ``UpstreamCall``.

    ``read()`` and ``chunks()`` release the connection when they finish; ``release()`` is for a
    caller that stops early. The connection goes back to the pool only if the response was
    complete and the server allows keep-alive; otherwise it is closed.
    """

    __slots__ = (
        "_chunks",
        "_complete",
        "_conn",
        "_error",
        "_framed",
        "_head",
        "_informational",
        "_keep_alive",
        "_paused",
        "_released",
        "_size",
        "_waiter",
        "content_type",
        "parser",
        "received",
        "status",
    )

    def __init__(self, conn: _Connection, head: asyncio.Future[None]):
        self._conn = conn
        self._head = head
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self.status = 0
        self.content_type = "application/json"
        self.received = False
        self._chunks: list[bytes] = []
        self._size = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._keep_alive = False
        self._framed = False  # Content-Length or chunked: an early EOF is an error, not the end
        self._informational = False
        self._error: HTTP1Error | None = None
        self._released = False

    # --- parser callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:  # a second, unrequested response: the connection cannot be trusted
            self._keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value.decode("latin-1")
        elif name == b"content-length" or name == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()  # type: ignore[union-attr]
        if status < 200:  # 1xx (e.g. 103 Early Hints): the real response follows
            self._informational = True
            self.content_type = "application/json"
            self._framed = False
            return
        self.status = status
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._size += len(body)
        if self._size > READ_LIMIT and not self._paused:
            self._paused = True
            self._conn.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        # Only valid here: the parser resets its state for the next message afterwards.
        self._keep_alive = self.parser.should_keep_alive()  # type: ignore[union-attr]
        self._complete = True
        self._wake()

    # --- connection events --------------------------------------------------

    def closed(self, exc: Exception | None) -> None:
        if self.status and not self._framed and exc is None and not self._complete:
            # No length and not chunked: the body runs until the server closes the connection.
            self._complete = True
            self._wake()
            return
        reason = exc.__class__.__name__ if exc else "connection closed by the server"
        self.fail(ConnectionLostError(reason, self.received))

    def fail(self, error: HTTP1Error) -> None:
        if self._complete or self._error is not None:
            return
        self._error = error
        if not self._head.done():
            self._head.set_exception(error)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- consumer side ------------------------------------------------------

    def _take(self) -> bytes | None:
        chunks = self._chunks
        if not chunks:
            return None
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._size = 0
        if self._paused:
            self._paused = False
            self._conn.transport.resume_reading()
        return data

    async def _wait(self) -> None:
        self._waiter = self._conn.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read(self) -> bytes:
        parts: list[bytes] = []
        try:
            while True:
                data = self._take()
                if data is not None:
                    parts.append(data)
                if self._complete:
                    return parts[0] if len(parts) == 1 else b"".join(parts)
                if self._error is not None:
                    raise self._error
                await self._wait()
        finally:
            self.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                data = self._take()
                if data is not None:
                    yield data
                elif self._complete:
                    return
                elif self._error is not None:
                    raise self._error
                else:
                    await self._wait()
        finally:
            self.release()

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self.parser = None  # breaks the parser <-> response cycle
        conn = self._conn
        conn.response = None
        if self._complete and self._keep_alive and self._error is None:
            if self._paused:
                conn.transport.resume_reading()
            conn.pool.put(conn)
        else:
            conn.transport.close()


class _Connection(asyncio.Protocol):
    __slots__ = ("closed", "counted", "exchanges", "idle", "loop", "pool", "response", "transport")

    def __init__(self, pool: _Pool):
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self.response: Response | None = None
        self.exchanges = 0
        self.idle = False
        self.closed = False
        self.counted = True  # holds one of the pool's connection slots

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection cannot be trusted
            self.transport.close()
            return
        response.received = True
        try:
            response.parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserError as exc:
            response.fail(ConnectionLostError(f"invalid HTTP response ({exc.__class__.__name__})", True))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.lost(self)
        if self.response is not None:
            self.response.closed(exc)

    async def send(self, data: bytes) -> Response:
        """Write one request and wait for the head of its response."""
        self.exchanges += 1
        response = Response(self, self.loop.create_future())
        self.response = response
        self.transport.write(data)
        try:
            await response._head
        except BaseException:
            response.release()  # not complete: closes the connection
            raise
        return response


class _Pool:
    def __init__(
        self,
        origin: Origin,
        max_connections: int,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None,
    ):
        self.loop = asyncio.get_running_loop()
        self._origin = origin
        self._max = max_connections
        self._connect_timeout = connect_timeout
        self._ssl = ssl_context
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._open = 0  # slots taken: connections open or being opened
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    async def acquire(self, reuse: bool) -> _Connection:
        while True:
            if self._closed:
                raise ConnectError("client closed")
            if reuse:
                while self._idle:
                    conn = self._idle.pop()
                    conn.idle = False
                    if not conn.closed and not conn.transport.is_closing():
                        return conn
            if self._open < self._max:
                self._open += 1
                return await self._connect()
            handed = await self._wait_turn()
            if handed is None:  # a slot was passed on: open a connection in it
                return await self._connect()
            if not handed.closed:
                return handed

    async def _wait_turn(self) -> _Connection | None:
        if len(self._waiters) >= MAX_WAITERS:
            raise ConnectError(f"all {self._max} connections busy and {MAX_WAITERS} requests waiting")
        turn: asyncio.Future[_Connection | None] = self.loop.create_future()
        self._waiters.append(turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if not turn.cancelled() and turn.done():  # handed over just as we gave up: pass it on
                handed = turn.result()
                if handed is None:
                    self._free_slot()
                else:
                    self.put(handed)
            else:
                with contextlib.suppress(ValueError):  # already skipped by a hand-over
                    self._waiters.remove(turn)
            raise

    async def _connect(self) -> _Connection:
        """Open a connection in a slot already taken."""
        origin = self._origin
        made: list[_Connection] = []

        def factory() -> _Connection:
            made.append(_Connection(self))
            return made[0]

        ssl_context = None
        if origin.scheme == "https":
            ssl_context = self._ssl or _default_ssl_context()
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self.loop.create_connection(
                    factory,
                    origin.host,
                    origin.port,
                    ssl=ssl_context,
                    server_hostname=origin.host if ssl_context else None,
                )
        except BaseException as exc:
            if not made or made[0].counted:
                if made:
                    made[0].counted = False
                self._free_slot()
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                raise ConnectError(exc.__class__.__name__) from exc
            raise
        conn = made[0]
        if self._closed or conn.closed:
            conn.transport.close()
            raise ConnectError("client closed" if self._closed else "connection closed by the server")
        self._all.add(conn)
        return conn

    def put(self, conn: _Connection) -> None:
        """A connection whose exchange completed cleanly: to the next waiter, or idle."""
        if conn.closed:
            return
        if self._closed:
            conn.transport.close()
            return
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(conn)
                return
        conn.idle = True
        self._idle.append(conn)

    def lost(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn.idle:
            conn.idle = False
            self._idle.remove(conn)
        if conn.counted:
            conn.counted = False
            self._free_slot()

    def _free_slot(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes to this waiter
                return
        self._open -= 1

    def close(self) -> None:
        self._closed = True
        for turn in self._waiters:
            if not turn.done():
                turn.set_exception(ConnectError("client closed"))
        self._waiters.clear()
        for conn in list(self._all):
            conn.transport.close()


_default_context: ssl.SSLContext | None = None


def _default_ssl_context() -> ssl.SSLContext:
    # Loading the system CA store takes milliseconds: once per process.
    global _default_context
    if _default_context is None:
        _default_context = ssl.create_default_context()
    return _default_context


class HTTP1Client:
    """Pools per origin. ``ssl_context`` replaces the system-CA default (tests pass their own CA)."""

    def __init__(
        self, *, max_connections: int, connect_timeout: float, ssl_context: ssl.SSLContext | None = None
    ):
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._ssl_context = ssl_context
        self._pools: dict[Origin, _Pool] = {}
        self._closed = False

    async def request(self, origin: Origin, data: bytes) -> Response:
        """Send ``data`` (a whole request) and return once the response head is in.

        A pooled connection the server closed while it sat idle fails before any response
        byte arrives; then the request is sent once more on a connection not taken from
        the idle list (the server cannot have processed it).
        """
        pool = self._pools.get(origin)
        if pool is None:
            if self._closed:
                raise ConnectError("client closed")
            pool = self._pools[origin] = _Pool(
                origin, self._max_connections, self._connect_timeout, self._ssl_context
            )
        conn = await pool.acquire(reuse=True)
        try:
            return await conn.send(data)
        except ConnectionLostError as exc:
            if exc.answered or conn.exchanges == 1:
                raise
        conn = await pool.acquire(reuse=False)
        return await conn.send(data)

    async def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await asyncio.sleep(0)  # let the transports run connection_lost


async def post(
    url: str,
    body: bytes,
    content_type: str,
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """One POST on its own connection (rare calls, such as an OAuth token exchange)."""
    target = parse_url(url)
    client = HTTP1Client(max_connections=1, connect_timeout=timeout, ssl_context=ssl_context)
    try:
        async with asyncio.timeout(timeout):
            head = request_head(target.path, target.host_header, [("Content-Type", content_type)])
            response = await client.request(target.origin, with_body(head, body))
            return response.status, await response.read()
    finally:
        await client.close()
