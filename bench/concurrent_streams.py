"""Many long streams at once: N concurrent 2-second streams, straight to the upstream and via the gateway.

Each client opens its own connection, sends one streaming request and reads to the end. The
upstream is the split-stream upstream with a 2 s pause (first chunk at once, the rest 2 s
later), so all N streams are open together. Reported per path: time to first chunk (connect
+ request sent -> first body bytes) p50/p99 and completion; for the gateway also its peak RSS
during the run (VmHWM, reset before it) and its CPU time per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError
from tests.faults.harness import drive, process_cpu_seconds, process_peak_rss_bytes


@dataclass(frozen=True, slots=True)
class ConcurrentStreamsResult:
    streams: int
    stream_seconds: float
    direct_first_chunk_p50_ms: float
    direct_first_chunk_p99_ms: float
    gateway_first_chunk_p50_ms: float
    gateway_first_chunk_p99_ms: float
    gateway_completed: int
    gateway_peak_rss_mb: float
    gateway_cpu_ms_per_stream: float


def _request(port: int, path: str, key: str, body: bytes) -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (path.encode(), port, key.encode(), len(body), body)
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def _run(port: int, request: bytes, streams: int, seconds: float) -> tuple[list[float], int]:
    results = asyncio.run(drive(port, request, count=streams, concurrency=streams, timeout=seconds + 60))
    complete = [r for r in results if r.status == 200 and r.error is None and r.body.endswith(b"[DONE]\n\n")]
    return [r.first_byte_s for r in complete if r.first_byte_s is not None], len(complete)


def _reset_peak_rss(pid: int) -> None:
    with contextlib.suppress(OSError):  # "5" resets VmHWM (Linux); without it the peak is since start
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def measure(
    upstream_port: int,
    gateway_port: int,
    gateway_pid: int,
    key: str,
    body: bytes,
    streams: int,
    seconds: float,
) -> ConcurrentStreamsResult:
    direct, direct_done = _run(
        upstream_port, _request(upstream_port, "/v1/chat/completions", key, body), streams, seconds
    )
    if direct_done < streams:
        raise BenchError(
            f"only {direct_done} of {streams} direct streams completed: the upstream cannot take it"
        )
    _reset_peak_rss(gateway_pid)
    cpu = process_cpu_seconds(gateway_pid)
    via, via_done = _run(
        gateway_port, _request(gateway_port, "/v1/chat/completions", key, body), streams, seconds
    )
    cpu = process_cpu_seconds(gateway_pid) - cpu
    if not via:
        raise BenchError(f"no stream of {streams} completed via the gateway")
    return ConcurrentStreamsResult(
        streams=streams,
        stream_seconds=seconds,
        direct_first_chunk_p50_ms=_percentile(direct, 0.5),
        direct_first_chunk_p99_ms=_percentile(direct, 0.99),
        gateway_first_chunk_p50_ms=_percentile(via, 0.5),
        gateway_first_chunk_p99_ms=_percentile(via, 0.99),
        gateway_completed=via_done,
        gateway_peak_rss_mb=process_peak_rss_bytes(gateway_pid) / 1e6,
        gateway_cpu_ms_per_stream=cpu * 1000 / streams,
    )
