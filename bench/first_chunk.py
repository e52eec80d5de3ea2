"""First SSE chunk: how long it takes to reach the client, directly and through the gateway.

Every chunk of the split-stream upstream carries the monotonic time it was written
(``: sent_ns=``); the upstream then pauses before the rest, so the first chunk
travels alone. Per request the client notes when the first chunk is complete:

- relay = arrival - upstream write: one loopback hop directly; through the gateway
  two hops plus the gateway's work from the upstream's head to its first chunk out.
- ttfc = arrival - request sent: everything, including auth and routing.

Requests alternate direct / gateway (two keep-alive connections), so background
load hits both alike; the added figures are per-pair differences.
"""

from __future__ import annotations

import math
import re
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from bench import BenchError

_SENT = re.compile(rb": sent_ns=(\d+)\n[^\n]*\n\n")
_LAST_CHUNK = b"\r\n0\r\n\r\n"  # end of a chunked body; SSE text never contains it


@dataclass(frozen=True, slots=True)
class Sample:
    ttfc_ns: int
    relay_ns: int


@dataclass(frozen=True, slots=True)
class FirstChunkResult:
    requests: int
    direct_relay_p50_ms: float
    gateway_relay_p50_ms: float
    added_relay_p50_ms: float
    added_relay_p99_ms: float
    added_ttfc_p50_ms: float
    added_ttfc_p99_ms: float


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in (0, 1])."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def first_sent_ns(buffer: bytes) -> int | None:
    """The upstream's write time of the first SSE event, once that event is complete in `buffer`."""
    match = _SENT.search(buffer)
    return int(match.group(1)) if match else None


class StreamClient:
    """One keep-alive HTTP/1.1 connection that POSTs a streaming request and reads the whole answer."""

    def __init__(self, base_url: str, body: bytes, key: str):
        url = urlsplit(base_url)
        self._sock = socket.create_connection((url.hostname, url.port), timeout=10)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._request = (
            f"POST {url.path}/chat/completions HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self._name = base_url

    def request(self) -> Sample:
        buffer = b""
        arrived = sent_ns = None
        started = time.monotonic_ns()
        self._sock.sendall(self._request)
        while not buffer.endswith(_LAST_CHUNK):
            data = self._sock.recv(65536)
            now = time.monotonic_ns()
            if not data:
                raise BenchError(f"{self._name} closed the connection mid-answer: {buffer[:300]!r}")
            buffer += data
            if arrived is None and (sent_ns := first_sent_ns(buffer)) is not None:
                arrived = now
        if not buffer.startswith(b"HTTP/1.1 200 ") or arrived is None or sent_ns is None:
            raise BenchError(f"{self._name} answered the stream wrongly: {buffer[:300]!r}")
        return Sample(ttfc_ns=arrived - started, relay_ns=arrived - sent_ns)

    def close(self) -> None:
        self._sock.close()


def measure(direct: StreamClient, gateway: StreamClient, requests: int, warmup: int) -> FirstChunkResult:
    for _ in range(warmup):
        direct.request()
        gateway.request()
    pairs = [(direct.request(), gateway.request()) for _ in range(requests)]

    def ms(values_ns: list[int], fraction: float) -> float:
        return percentile([v / 1e6 for v in values_ns], fraction)

    added_relay = [g.relay_ns - d.relay_ns for d, g in pairs]
    added_ttfc = [g.ttfc_ns - d.ttfc_ns for d, g in pairs]
    return FirstChunkResult(
        requests=requests,
        direct_relay_p50_ms=ms([d.relay_ns for d, _ in pairs], 0.5),
        gateway_relay_p50_ms=ms([g.relay_ns for _, g in pairs], 0.5),
        added_relay_p50_ms=ms(added_relay, 0.5),
        added_relay_p99_ms=ms(added_relay, 0.99),
        added_ttfc_p50_ms=ms(added_ttfc, 0.5),
        added_ttfc_p99_ms=ms(added_ttfc, 0.99),
    )
