"""python -m bench: start the upstreams and the gateway, load both with wrk, print and save the numbers.

Order: nginx direct vs the gateway (SQLite log) per scenario, the first-chunk
measurement, then (optionally) the gateway again with its request log on a
throwaway PostgreSQL database. Every process and temp file goes away at the
end, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson

from bench import BenchError, concurrent_streams, gateway, wrk
from bench.first_chunk import StreamClient, measure
from bench.report import (
    CHAT_C1,
    CHAT_C10,
    DIRECT,
    GATEWAY,
    GATEWAY_PG,
    SSE_C10,
    Results,
    table,
    write_json,
)
from bench.upstreams import CHAT_COMPLETION, SSE_STREAM, NginxUpstream, SplitStreamUpstream, find_nginx
from gateway_app import __version__
from gateway_app.keys import generate_key
from tests.conftest import Databases
from tests.support.processes import REPO

# scenario -> (gateway model, nginx path of the direct run, wrk connections)
SCENARIOS = {
    CHAT_C10: ("bench-chat", "/v1", 10),
    CHAT_C1: ("bench-chat", "/v1", 1),
    SSE_C10: ("bench-sse", "/sse/v1", 10),
}
_MESSAGES = [{"role": "user", "content": "Say hello in five words."}]


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured wrk run (default 5)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="seconds of warm-up before each run (default 1)"
    )
    parser.add_argument("--stream-requests", type=int, default=200, help="first-chunk pairs (default 200)")
    parser.add_argument(
        "--stream-pause",
        type=float,
        default=0.03,
        help="upstream pause after the first chunk, s (default 0.03)",
    )
    parser.add_argument(
        "--concurrent-streams", type=int, default=1000, help="streams open at once (default 1000; 0 skips)"
    )
    parser.add_argument(
        "--concurrent-stream-seconds", type=float, default=2.0, help="length of each of them, s (default 2)"
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL request-log run")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the gateway and the load to CPUs")
    parser.add_argument("--output", type=Path, default=REPO / ".bench" / "results.json")
    options = parser.parse_args(argv)
    if options.duration < 1 or options.warmup < 1 or options.stream_requests < 1:
        parser.error("--duration, --warmup and --stream-requests must be at least 1")
    return options


def body(model: str, stream: bool) -> bytes:
    # Streams ask for usage, as clients that want it do: the gateway then relays every chunk
    # (it hides the usage chunk from clients that did not ask, which would change the bytes).
    extra = {"stream_options": {"include_usage": True}} if stream else {}
    return orjson.dumps({"model": model, "messages": _MESSAGES, "stream": stream, **extra})


def _cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(gateway CPUs, load CPUs): the gateway alone on the first CPU, everything else on the rest."""
    available = sorted(os.sched_getaffinity(0))
    if not pin or len(available) < 2:
        return None, None
    return {available[0]}, set(available[1:])


def _check_answers(gateway_url: str, key: str) -> None:
    """The gateway must relay nginx's bytes unchanged before its speed means anything."""
    for model, expected in (("bench-chat", CHAT_COMPLETION), ("bench-sse", SSE_STREAM)):
        answer = httpx.post(
            gateway_url + "/v1/chat/completions",
            content=body(model, model == "bench-sse"),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=10,
        )
        if answer.status_code != 200 or answer.text != expected:
            raise BenchError(f"gateway answered {model} with HTTP {answer.status_code}: {answer.text[:300]}")


@dataclass(frozen=True, slots=True)
class Target:
    name: str  # DIRECT, GATEWAY or GATEWAY_PG
    base_url: str
    pid: int | None = None  # the gateway's: its CPU time per request
    db_url: str | None = None  # the gateway's: how much of the load its request log kept


def _load(results: Results, target: Target, key: str, opts: argparse.Namespace, scenarios: list[str]) -> None:
    for scenario in scenarios:
        model, nginx_path, connections = SCENARIOS[scenario]
        path = nginx_path if target.name == DIRECT else "/v1"
        url = f"{target.base_url}{path}/chat/completions"
        payload = body(model, scenario == SSE_C10)
        wrk.run(url, payload, key, connections, opts.warmup)  # pools and caches warm; numbers dropped
        start = gateway.mark(target.pid, target.db_url) if target.pid and target.db_url else None
        result = wrk.run(url, payload, key, connections, opts.duration)
        results.wrk.setdefault(target.name, {})[scenario] = result
        line = f"{result.requests_per_s:>8.0f} req/s  p50 {result.p50_ms:.3f} ms  p99 {result.p99_ms:.3f} ms"
        if start is not None:
            cost = gateway.cost_since(start, target.pid, target.db_url, result.requests)
            results.gateway_costs.setdefault(target.name, {})[scenario] = cost
            line += (
                f"  CPU {cost.cpu_us_per_request:.0f} us/req, log kept {cost.logged_fraction:.1%}, "
                f"backlog {cost.log_backlog}"
            )
        print(f"  {target.name:<17} {scenario:<9} {line}", flush=True)


def run(opts: argparse.Namespace, stack: contextlib.ExitStack) -> Results:
    gateway_cpus, load_cpus = _cpus(not opts.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)  # wrk, nginx and the stream upstream inherit it
    find_nginx()  # a missing tool is named before anything starts
    wrk.find_wrk()
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-bench-")))
    results = Results(
        settings={
            "duration_s": opts.duration,
            "warmup_s": opts.warmup,
            "gateway_cpus": sorted(gateway_cpus or []),
            "load_cpus": sorted(load_cpus or []),
            "stream_requests": opts.stream_requests,
            "stream_pause_s": opts.stream_pause,
            "gateway_version": __version__,
            "python": sys.version.split()[0],
            "loadavg_at_start": os.getloadavg(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    key = generate_key()
    nginx = NginxUpstream(workdir)
    stack.callback(nginx.stop, timeout=10)
    split = SplitStreamUpstream(workdir, opts.stream_pause)
    stack.callback(split.stop, timeout=10)
    long_streams = SplitStreamUpstream(workdir, opts.concurrent_stream_seconds)
    stack.callback(long_streams.stop, timeout=10)
    upstreams = {
        "bench-chat": nginx.url + "/v1",
        "bench-sse": nginx.url + "/sse/v1",
        "bench-split": split.url + "/v1",
        "bench-long": long_streams.url + "/v1",
    }
    databases = Databases(workdir)

    print("gateway with its request log on SQLite", flush=True)
    with contextlib.ExitStack() as sqlite_stack:
        db_url = databases.new("sqlite")
        gw = gateway.start(gateway.config(db_url, upstreams), workdir, key, gateway_cpus)
        sqlite_stack.callback(gw.stop, timeout=10)
        _check_answers(gw.url, key)
        direct, via_sqlite = Target(DIRECT, nginx.url), Target(GATEWAY, gw.url, gw.proc.pid, db_url)
        for scenario in SCENARIOS:  # alternate, so that drifting background load hits both alike
            _load(results, direct, key, opts, [scenario])
            _load(results, via_sqlite, key, opts, [scenario])
        print(f"  first chunk: {opts.stream_requests} streams each way", flush=True)
        split_direct = StreamClient(split.url + "/v1", body("bench-split", True), key)
        sqlite_stack.callback(split_direct.close)
        split_via_gateway = StreamClient(gw.url + "/v1", body("bench-split", True), key)
        sqlite_stack.callback(split_via_gateway.close)
        results.first_chunk = measure(split_direct, split_via_gateway, opts.stream_requests, warmup=10)
        if opts.concurrent_streams:
            print(f"  {opts.concurrent_streams} concurrent streams, each way", flush=True)
            results.concurrent_streams = concurrent_streams.measure(
                long_streams.port,
                gw.port,
                gw.proc.pid,
                key,
                body("bench-long", True),
                opts.concurrent_streams,
                opts.concurrent_stream_seconds,
            )

    if not opts.no_postgres:
        try:
            pg_url = databases.new("postgres")
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"PostgreSQL run skipped: cannot create a database at 127.0.0.1:5432 ({exc})", flush=True)
        else:
            stack.callback(databases.drop, pg_url)
            print("gateway with its request log on PostgreSQL", flush=True)
            gw = gateway.start(gateway.config(pg_url, upstreams), workdir, key, gateway_cpus)
            stack.callback(gw.stop, timeout=10)
            _load(results, Target(GATEWAY_PG, gw.url, gw.proc.pid, pg_url), key, opts, [CHAT_C10, CHAT_C1])
    results.settings["loadavg_at_end"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    opts = _options(argv)
    # SIGTERM unwinds like Ctrl-C, so the cleanup below runs either way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with contextlib.ExitStack() as stack:
            results = run(opts, stack)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; its processes are stopped and its temp files removed", file=sys.stderr)
        return 130
    print()
    print(table(results))
    write_json(results, opts.output)
    print(f"\nwritten to {opts.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
