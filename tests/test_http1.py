"""The upstream HTTP/1.1 client against real loopback servers, on both asyncio's loop and uvloop.

The servers are raw asyncio servers written here, so each test controls exactly
what goes on the wire: framing, pauses, closes, connection counts.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway_app.config import ProviderSettings
from gateway_app.providers.base import UpstreamError
from gateway_app.providers.http1 import READ_LIMIT
from gateway_app.providers.openai_compat import OpenAICompatProvider

HOST = "127.0.0.1"
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request) -> Callable[[Coroutine[Any, Any, None]], None]:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(main: Coroutine[Any, Any, None]) -> None:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            loop_runner.run(main)

    return runner


@dataclass
class Request:
    head: bytes
    headers: dict[str, str]
    body: bytes
    connection: int  # 1-based number of the connection it came on
    index: int  # 0-based position on that connection


Reader, Writer = asyncio.StreamReader, asyncio.StreamWriter
Respond = Callable[[Request, Reader, Writer], Awaitable[bool]]


class Server:
    """Reads requests (Content-Length bodies) and lets ``respond`` answer; it returns whether to keep the
    connection open. Counts connections accepted, open now, and the most open at once."""

    def __init__(self, respond: Respond, ssl_context: ssl.SSLContext | None = None):
        self.respond = respond
        self.ssl_context = ssl_context
        self.requests: list[Request] = []
        self.connections = 0
        self.open_now = 0
        self.peak_open = 0
        self._handlers: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.peak_open = max(self.peak_open, self.open_now)
        try:
            for index in itertools.count():
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                headers = {
                    name.lower(): value.strip()
                    for name, _, value in (ln.partition(":") for ln in lines[1:] if ln)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(head, headers, body, number, index)
                self.requests.append(request)
                if not await self.respond(request, reader, writer):
                    return
                await writer.drain()
        finally:
            self.open_now -= 1
            writer.close()


def answer(
    body: bytes, status: str = "200 OK", content_type: str = "application/json", extra: str = ""
) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)


async def ok(request: Request, reader: Reader, writer: Writer) -> bool:
    writer.write(answer(b'{"answer": %d}' % len(request.body)))
    return True


def provider(url: str, ssl_context: ssl.SSLContext | None = None, **settings: Any) -> OpenAICompatProvider:
    defaults: dict[str, Any] = {"timeout_seconds": 5, "connect_timeout_seconds": 2}
    config = ProviderSettings(
        name="up",
        type="openai_compat",
        base_url=url,
        pricing_provider_id="self_hosted",
        api_key="literal.sk-test",
        **{**defaults, **settings},
    )
    assert config.api_key is not None
    config.api_key.resolve()
    return OpenAICompatProvider(config, ssl_context=ssl_context)


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_content_length_response_and_request_head(run) -> None:
    async def main() -> None:
        async with Server(ok) as server:
            client = provider(server.url)
            call = await client.open("chat", BODY, 5)
            assert (call.status, call.content_type) == (200, "application/json")
            assert await call.read() == b'{"answer": %d}' % len(BODY)
            embeddings = await client.open("embeddings", b"{}", 5)
            assert await embeddings.read() == b'{"answer": 2}'
            await client.close()
        chat, embed = server.requests
        assert chat.head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        assert embed.head.startswith(b"POST /v1/embeddings HTTP/1.1\r\n")
        assert chat.body == BODY and chat.headers["content-length"] == str(len(BODY))
        assert chat.headers["host"] == f"127.0.0.1:{server.port}"
        assert chat.headers["authorization"] == "Bearer sk-test"
        assert chat.headers["content-type"] == "application/json"
        assert chat.headers["accept-encoding"] == "identity"
        assert chat.headers["connection"] == "keep-alive"

    run(main())


def test_chunked_response_and_informational_head(run) -> None:
    async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(chunked(b"one ", b"two ", b"three") + b"0\r\n\r\n")
        return True

    async def main() -> None:
        async with Server(respond) as server:
            client = provider(server.url)
            for _ in range(2):
                call = await client.open("chat", BODY, 5)
                assert (call.status, call.content_type) == (200, "text/plain")
                assert await call.read() == b"one two three"
            await client.close()
        assert server.connections == 1

    run(main())


def test_sse_chunks_arrive_before_the_rest_is_sent(run) -> None:
    async def main() -> None:
        rest_may_go = asyncio.Event()

        async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            writer.write(chunked(b"data: 1\n\n"))
            await writer.drain()
            await rest_may_go.wait()
            writer.write(chunked(b"data: 2\n\n", b"data: [DONE]\n\n") + b"0\r\n\r\n")
            return True

        async with Server(respond) as server:
            client = provider(server.url)
            call = await client.open("chat", BODY, 5)
            assert call.content_type == "text/event-stream"
            pieces = call.chunks()
            assert await anext(pieces) == b"data: 1\n\n"  # while the server still holds the rest
            rest_may_go.set()
            assert b"".join([piece async for piece in pieces]) == b"data: 2\n\ndata: [DONE]\n\n"
            assert (await (await client.open("chat", BODY, 5)).read()).startswith(b"data: 1")
            await client.close()
        assert server.connections == 1

    run(main())


def test_sequential_requests_reuse_one_connection(run) -> None:
    async def main() -> None:
        async with Server(ok) as server:
            client = provider(server.url)
            for _ in range(5):
                assert (await (await client.open("chat", BODY, 5)).read()).startswith(b'{"answer"')
            await client.close()
        assert server.connections == 1 and len(server.requests) == 5

    run(main())


def test_connection_close_is_respected(run) -> None:
    async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(answer(b"{}", extra="Connection: close\r\n"))
        return True  # the server would keep it open: the client must not reuse it anyway

    async def main() -> None:
        async with Server(respond) as server:
            client = provider(server.url)
            for _ in range(3):
                assert await (await client.open("chat", BODY, 5)).read() == b"{}"
            await client.close()
        assert server.connections == 3

    run(main())


def test_body_until_close_without_length(run) -> None:
    async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        writer.write(b'{"until": ')
        await writer.drain()
        writer.write(b'"close"}')
        return False

    async def main() -> None:
        async with Server(respond) as server:
            client = provider(server.url)
            for _ in range(2):
                assert await (await client.open("chat", BODY, 5)).read() == b'{"until": "close"}'
            await client.close()
        assert server.connections == 2

    run(main())


def test_idle_connection_closed_by_the_server_is_replaced(run) -> None:
    async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
        if request.connection == 1 and request.index == 1:
            return False  # dropped as if its idle timeout had just run out: no answer at all
        writer.write(answer(b"{}"))
        return request.connection != 2  # the second connection is closed right after its answer

    async def main() -> None:
        async with Server(respond) as server:
            client = provider(server.url)
            # 1st on a new connection; 2nd reuses it, the server drops it unanswered: sent again on a new one.
            for _ in range(2):
                assert await (await client.open("chat", BODY, 5)).read() == b"{}"
            assert server.connections == 2
            await eventually(lambda: server.open_now == 0)  # the server closed connection 2 while idle
            assert await (await client.open("chat", BODY, 5)).read() == b"{}"
            await client.close()
        assert server.connections == 3 and len(server.requests) == 4

    run(main())


def test_a_new_connection_closed_unanswered_is_not_retried(run) -> None:
    async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
        return False

    async def main() -> None:
        async with Server(respond) as server:
            client = provider(server.url)
            with pytest.raises(UpstreamError) as caught:
                await client.open("chat", BODY, 5)
            await client.close()
        assert caught.value.kind == "connect" and "provider up unreachable" in str(caught.value)
        assert len(server.requests) == 1

    run(main())


def test_released_partial_body_closes_the_connection(run) -> None:
    async def main() -> None:
        done = asyncio.Event()

        async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
            if request.connection == 1:
                writer.write(answer(b"x" * 100)[:-90])  # head and 10 of 100 body bytes
                await writer.drain()
                await reader.read()  # until the client hangs up
                done.set()
                return False
            writer.write(answer(b"{}"))
            return True

        async with Server(respond) as server:
            client = provider(server.url)
            call = await client.open("chat", BODY, 5)
            assert await anext(call.chunks()) == b"x" * 10
            call.release()
            await asyncio.wait_for(done.wait(), 5)
            assert await (await client.open("chat", BODY, 5)).read() == b"{}"
            await client.close()
        assert server.connections == 2

    run(main())


def test_pool_never_opens_more_than_max_connections(run) -> None:
    async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
        await asyncio.sleep(0.05)
        writer.write(answer(b'"%d"' % request.connection))
        return True

    async def main() -> None:
        async with Server(respond) as server:
            client = provider(server.url, max_connections=2)

            async def one() -> bytes:
                return await (await client.open("chat", BODY, 5)).read()

            answers = await asyncio.gather(*(one() for _ in range(12)))
            await client.close()
        assert len(answers) == 12 and set(answers) == {b'"1"', b'"2"'}
        assert server.connections == 2 and server.peak_open == 2

    run(main())


def test_connect_refused_fails_fast_as_a_connect_error(run, closed_port) -> None:
    async def main() -> None:
        client = provider(f"http://127.0.0.1:{closed_port}/v1")
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await client.open("chat", BODY, 5)
        assert time.monotonic() - started < 2
        assert caught.value.kind == "connect" and caught.value.retryable
        assert str(caught.value) == "provider up unreachable (ConnectionRefusedError)"
        await client.close()

    run(main())


def test_connect_that_never_completes_is_a_timeout(run) -> None:
    # A listener with a full accept queue: Linux drops further SYNs, so connecting hangs.
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind((HOST, 0))
        listener.listen(0)
        filler.connect(listener.getsockname())

        async def main() -> None:
            client = provider(f"http://{HOST}:{listener.getsockname()[1]}/v1", connect_timeout_seconds=0.3)
            started = time.monotonic()
            with pytest.raises(UpstreamError) as caught:
                await client.open("chat", BODY, 5)
            assert time.monotonic() - started < 3
            assert caught.value.kind == "timeout" and caught.value.retryable
            await client.close()

        run(main())


def test_no_answer_is_a_timeout_and_the_connection_is_dropped(run) -> None:
    async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
        await reader.read()  # never answers; returns when the client hangs up
        return False

    async def main() -> None:
        async with Server(respond) as server:
            client = provider(server.url, timeout_seconds=0.3)
            with pytest.raises(UpstreamError) as caught:
                await client.open("chat", BODY, 5)
            assert caught.value.kind == "timeout"
            assert str(caught.value) == "provider up did not answer in time"
            await eventually(lambda: server.open_now == 0)
            await client.close()

    run(main())


def test_error_statuses_carry_their_body(run) -> None:
    statuses = iter(["401 Unauthorized", "500 Internal Server Error", "400 Bad Request"])

    async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
        writer.write(answer(b'{"error": {"message": "no"}}', status=next(statuses)))
        return True

    async def main() -> None:
        async with Server(respond) as server:
            client = provider(server.url)
            errors = []
            for _ in range(3):
                with pytest.raises(UpstreamError) as caught:
                    await client.open("chat", BODY, 5)
                errors.append(caught.value)
            await client.close()
        assert [(e.kind, e.status, e.retryable) for e in errors] == [
            ("auth", 401, True),
            ("http", 500, True),
            ("http", 400, False),
        ]
        assert all(e.body == b'{"error": {"message": "no"}}' for e in errors)
        assert str(errors[1]) == "provider up answered HTTP 500"
        assert server.connections == 1  # error bodies are read, so the connection stays usable

    run(main())


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def test_tls_with_a_trusted_ca_and_verification_by_default(run, tmp_path) -> None:
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def main() -> None:
        async with Server(ok, server_context) as server:
            trusting = provider(server.url, ssl_context=ssl.create_default_context(cafile=str(cert)))
            for _ in range(2):
                assert (await (await trusting.open("chat", BODY, 5)).read()).startswith(b'{"answer"')
            await trusting.close()
            assert server.connections == 1

            default = provider(server.url)  # system CAs: the self-signed certificate is refused
            with pytest.raises(UpstreamError) as caught:
                await default.open("chat", BODY, 5)
            await default.close()
        assert caught.value.kind == "connect" and "SSLCertVerificationError" in str(caught.value)

    run(main())


def test_large_body_is_read_with_backpressure(run) -> None:
    total = 48 * 1024 * 1024
    block = bytes(range(256)) * 4096  # 1 MiB
    written = 0

    async def respond(request: Request, reader: Reader, writer: Writer) -> bool:
        nonlocal written
        if request.index > 0:
            writer.write(answer(b"{}"))
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        while written < total:
            writer.write(block)
            await writer.drain()
            written += len(block)
        return True

    async def main() -> None:
        async with Server(respond) as server:
            client = provider(server.url)
            call = await client.open("chat", BODY, 5)
            pieces = call.chunks()
            received = len(await anext(pieces))
            await asyncio.sleep(0.5)
            # The client stopped reading: the server is stuck well short of the end, and the
            # client holds at most its limit (plus one socket read) unconsumed.
            assert written < total - 8 * len(block)
            assert call._size <= READ_LIMIT + 256 * 1024
            async for piece in pieces:
                received += len(piece)
            assert received == total
            assert await (await client.open("chat", BODY, 5)).read() == b"{}"  # reusable once drained
            await client.close()
        assert server.connections == 1

    run(main())


def test_close_shuts_pooled_connections(run) -> None:
    async def main() -> None:
        async with Server(ok) as server:
            client = provider(server.url, max_connections=3)
            assert await (await client.open("chat", BODY, 5)).read()
            assert server.open_now == 1
            await client.close()
            await eventually(lambda: server.open_now == 0)
            with pytest.raises(UpstreamError) as caught:
                await client.open("chat", BODY, 5)
            assert caught.value.kind == "connect"

    run(main())
