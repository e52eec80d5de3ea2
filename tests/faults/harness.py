"""The fault suite's parts: a misbehaving upstream (a real process) and a bounded load driver.

Upstream: ``python -m tests.faults.harness --port N``, raw asyncio so that thousands of
connections cost little. ``POST /_control`` with JSON switches its behaviour at run time,
``GET /_stats`` tells what it saw (connections open now and at most, streams started,
finished and cut by the client, bytes sent). Modes (``mode``) for ``POST /v1/chat/completions``:

- ``ok``: a chat completion, or a stream of ``stream_chunks`` events ``chunk_interval`` apart
- ``slow``: ``delay`` seconds before the head, then as ``ok``
- ``stall_after_head``: the head (non-stream: a Content-Length of ``body_bytes``), then silence
- ``stall_mid_stream``: the head and ``stall_after_chunks`` events (or half the body), then silence
- ``endless``: an SSE stream that never ends, written as fast as the reader takes it
- ``huge_body``: a non-stream body of ``body_bytes`` bytes (valid JSON), written with backpressure
- ``reset``: the head, part of the body, then a TCP reset

A stalled response is held until the client closes the connection (counted as cut).

Load driver: ``drive()`` sends ``count`` requests over ``concurrency`` raw connections, each
request and the whole run under a deadline, and returns per-request results (status, first
body byte, end); ``drop_after_first_chunk()`` opens a stream and disconnects mid-way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support.processes import Process, free_port, wait_http

MAX_REQUEST_HEAD = 64 * 1024
_CHUNK = b"x" * (1 << 20)


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
    }


def _event(model: str, index: int) -> bytes:
    chunk = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": {"content": f"w{index} "}}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _usage_event(model: str) -> bytes:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    chunk = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\ndata: [DONE]\n\n"


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@dataclass
class Behaviour:
    mode: str = "ok"
    delay: float = 0.0
    stream_chunks: int = 5
    chunk_interval: float = 0.0
    body_bytes: int = 1000
    stall_after_chunks: int = 2


@dataclass
class Stats:
    requests: int = 0
    open_connections: int = 0
    max_open_connections: int = 0
    streams_started: int = 0
    streams_finished: int = 0
    responses_cut: int = 0  # the client closed before the response ended
    bytes_sent: int = 0


class FaultUpstream:
    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.stats = Stats()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = self.stats
        stats.open_connections += 1
        stats.max_open_connections = max(stats.max_open_connections, stats.open_connections)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {}
                for line in header_lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                keep_going = await self._answer(method, path, body, reader, writer)
                if not keep_going:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            stats.responses_cut += 1
        finally:
            stats.open_connections -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if writer.transport.is_closing():  # uvloop raises RuntimeError on a write after close
            raise ConnectionResetError("the client closed the connection")
        writer.write(data)
        self.stats.bytes_sent += len(data)
        await writer.drain()

    async def _answer(
        self, method: str, path: str, body: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        if path == "/_stats":
            await self._write(writer, _json_response(self.stats.__dict__))
            return True
        if path == "/_control":
            for name, value in orjson.loads(body or b"{}").items():
                if name == "reset_stats":
                    self.stats = Stats(open_connections=self.stats.open_connections)
                else:
                    setattr(self.behaviour, name, type(getattr(self.behaviour, name))(value))
            await self._write(writer, _json_response(self.behaviour.__dict__))
            return True
        self.stats.requests += 1
        payload = orjson.loads(body or b"{}")
        model = str(payload.get("model", "m"))
        b = self.behaviour
        if b.mode == "slow":
            await asyncio.sleep(b.delay)
        if payload.get("stream"):
            return await self._stream(model, reader, writer)
        return await self._complete(model, reader, writer)

    async def _hold(self, reader: asyncio.StreamReader) -> bool:
        """Stay silent until the client closes the connection."""
        while await reader.read(65536):
            pass
        self.stats.responses_cut += 1
        return False

    async def _complete(self, model: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        b = self.behaviour
        if b.mode in ("ok", "slow", "endless"):  # endless concerns streams
            await self._write(writer, _json_response(_completion(model, "fault upstream says hi")))
            return True
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (
            b.body_bytes
        )
        if b.mode == "stall_after_head":
            await self._write(writer, head)
            return await self._hold(reader)
        if b.mode == "stall_mid_stream":
            await self._write(writer, head + b"x" * (b.body_bytes // 2))
            return await self._hold(reader)
        if b.mode == "reset":
            await self._write(writer, head + b'{"id": "chatcmpl-fault", "choices": [')
            await asyncio.sleep(0.05)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if b.mode == "huge_body":
            prefix = b'{"id": "chatcmpl-fault", "padding": "'
            suffix = b'"}'
            filler = b.body_bytes - len(prefix) - len(suffix)
            await self._write(writer, head + prefix)
            while filler > 0:
                piece = _CHUNK[: min(filler, len(_CHUNK))]
                await self._write(writer, piece)
                filler -= len(piece)
            await self._write(writer, suffix)
            return True
        raise ValueError(f"mode {b.mode} has no non-stream answer")

    async def _stream(self, model: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        b = self.behaviour
        self.stats.streams_started += 1
        await self._write(
            writer,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        if b.mode == "stall_after_head":
            return await self._hold(reader)
        index = 0
        while b.mode == "endless" or index < b.stream_chunks:
            if b.mode == "stall_mid_stream" and index >= b.stall_after_chunks:
                return await self._hold(reader)
            await self._write(writer, _chunked(_event(model, index)))
            index += 1
            if b.chunk_interval and b.mode != "endless":
                await asyncio.sleep(b.chunk_interval)
        await self._write(writer, _chunked(_usage_event(model)) + b"0\r\n\r\n")
        self.stats.streams_finished += 1
        return True


def _json_response(payload: Any) -> bytes:
    body = orjson.dumps(payload)
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def _serve(port: int, behaviour: Behaviour) -> None:
    upstream = FaultUpstream(behaviour)
    server = await asyncio.start_server(
        upstream.serve, "127.0.0.1", port, limit=MAX_REQUEST_HEAD, backlog=4096, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", default="ok")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(args.port, Behaviour(mode=args.mode)))


# --- the test side -------------------------------------------------------------


class FaultUpstreamProcess(Process):
    """The fault upstream as a real process on a free port."""

    def __init__(self, log_dir: Path, mode: str = "ok"):
        self.port = free_port()
        super().__init__(
            [sys.executable, "-m", "tests.faults.harness", "--port", str(self.port), "--mode", mode],
            log_dir / f"fault-upstream-{self.port}.log",
        )
        self.url = f"http://127.0.0.1:{self.port}/v1"
        wait_http(f"http://127.0.0.1:{self.port}/_stats", proc=self.proc)

    def control(self, **settings: Any) -> dict[str, Any]:
        response = httpx.post(f"http://127.0.0.1:{self.port}/_control", json=settings, timeout=5)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"http://127.0.0.1:{self.port}/_stats", timeout=5).json()


def process_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def process_peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def chat_request(
    port: int,
    key: str,
    *,
    stream: bool = False,
    model: str = "fault-1",
    extra_headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> bytes:
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream})
    lines = [
        b"POST /v1/chat/completions HTTP/1.1",
        b"Host: 127.0.0.1:%d" % port,
        b"Authorization: Bearer " + key.encode(),
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
    ]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in extra_headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Result:
    status: int = 0
    first_byte_s: float | None = None  # request sent -> first body byte
    total_s: float = 0.0
    body: bytes = b""
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), headers


async def _read_body(
    reader: asyncio.StreamReader, headers: dict[str, str], result: Result, sent: float
) -> None:
    parts: list[bytes] = []

    def got(data: bytes) -> None:
        if result.first_byte_s is None and data:
            result.first_byte_s = time.monotonic() - sent
        parts.append(data)

    if "content-length" in headers:
        got(await reader.readexactly(int(headers["content-length"])))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            got(data[:-2])
    else:
        while data := await reader.read(65536):
            got(data)
    result.body = b"".join(parts)


async def one_request(host: str, port: int, request: bytes, timeout: float) -> Result:
    """One request on its own connection; errors (including the deadline) land in ``error``."""
    result = Result()
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
            writer.write(request)
            result.status, result.headers = await _read_head(reader)
            await _read_body(reader, result.headers, result, started)
    except TimeoutError:
        result.error = "timeout"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        result.error = exc.__class__.__name__
    finally:
        result.total_s = time.monotonic() - started
        if writer is not None:
            writer.close()
    return result


async def drive(
    port: int, request: bytes, *, count: int, concurrency: int, timeout: float, host: str = "127.0.0.1"
) -> list[Result]:
    """``count`` requests, at most ``concurrency`` at once, each bounded by ``timeout`` seconds."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded() -> Result:
        async with gate:
            return await one_request(host, port, request, timeout)

    return await asyncio.gather(*(bounded() for _ in range(count)))


async def drop_after_first_chunk(port: int, request: bytes, timeout: float, host: str = "127.0.0.1") -> bool:
    """Open a stream, wait for its first body bytes, then close the connection (RST). True if they came."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(request)
            await _read_head(reader)
            got = bool(await reader.read(1))
        finally:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
    return got


def gateway_config(base: dict[str, Any], upstream_url: str, **provider: Any) -> dict[str, Any]:
    """``base`` (tests.conftest.base_config) with one openai_compat provider at ``upstream_url``."""
    config = {**base}
    config["providers"] = [
        {
            "name": "fault",
            "type": "openai_compat",
            "base_url": upstream_url,
            "pricing_provider_id": "self_hosted",
            **provider,
        }
    ]
    config["models"] = [
        {
            "name": "fault-1",
            "operations": ["chat"],
            "routes": [{"provider": "fault", "upstream_model": "up-1"}],
        }
    ]
    return config


if __name__ == "__main__":
    main()
