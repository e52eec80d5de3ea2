"""Run wrk (one thread, N connections, POST via post.lua) and parse what it prints."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError

_SCRIPT = Path(__file__).with_name("post.lua")
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = r"([\d.]+)(us|ms|s|m|h)"


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


def _ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS_MS[unit]


def parse(output: str) -> WrkResult:
    """The numbers of one `wrk --latency` run; BenchError if a line is missing."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"wrk output has no line matching {pattern!r}:\n{output}")
        return match

    p50 = find(rf"^\s+50%\s+{_DURATION}\s*$")
    p99 = find(rf"^\s+99%\s+{_DURATION}\s*$")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(find(r"^\s+(\d+) requests in ").group(1)),
        requests_per_s=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
    )


def find_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk not found: apt-get install nginx-light wrk")
    return found


def run(url: str, body: bytes, key: str, connections: int, seconds: int) -> WrkResult:
    """One wrk run; BenchError unless every answer was a 2xx on a healthy connection."""
    args = [find_wrk(), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(_SCRIPT), url]
    env = {**os.environ, "BENCH_BODY": body.decode(), "BENCH_KEY": key}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=seconds + 30)
    if done.returncode != 0:
        raise BenchError(f"wrk failed on {url} (exit {done.returncode}): {done.stderr.strip()}")
    result = parse(done.stdout)
    if result.non_2xx or result.socket_errors or not result.requests:
        raise BenchError(
            f"wrk against {url}: {result.non_2xx} non-2xx answers, {result.socket_errors} socket errors, "
            f"{result.requests} requests; check the gateway log"
        )
    return result
