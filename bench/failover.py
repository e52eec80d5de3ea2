"""Failover bench: one model, two equal routes; healthy run vs one route failing 50% of the time.

    python -m bench.failover [--requests 3000] [--concurrency 16]

Real processes on loopback: two fake upstreams (tests/support/fake_upstream.py), one gateway
on SQLite. Reports success rate and latency percentiles: the healthy run, the whole failing
run, and the failing run once the bad route's circuit is open.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import BASE_ENV, SEED_KEY, base_config
from tests.support.processes import FakeUpstreamProcess, GatewayProcess, run_cli

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _config(db: Path, a_url: str, b_url: str) -> dict:
    config = base_config(f"sqlite:///{db}")
    config["providers"] += [
        {"name": n, "type": "openai_compat", "base_url": u, "pricing_provider_id": "self_hosted"}
        for n, u in (("a", a_url), ("b", b_url))
    ]
    config["models"].append(
        {
            "name": "m",
            "routes": [{"provider": "a", "upstream_model": "x"}, {"provider": "b", "upstream_model": "x"}],
        }
    )
    return config


async def _run(url: str, total: int, concurrency: int) -> tuple[int, list[float]]:
    latencies: list[float] = []
    ok = 0
    queue = iter(range(total))
    headers = {"Authorization": f"Bearer {SEED_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal ok
            for _ in queue:
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=BODY)
                latencies.append(time.perf_counter() - started)
                ok += response.status_code == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, latencies


def _row(name: str, ok: int, latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100)
    return (
        f"{name:34} {len(latencies):6d} {100 * ok / len(latencies):8.2f}% "
        f"{q[49] * 1000:8.2f} {q[98] * 1000:8.2f}"
    )


def _circuit_open(url: str) -> bool:
    return 'gateway_circuit_state{provider="a",route="m/a/x"} 2.0' in httpx.get(url + "/metrics").text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        a, b = FakeUpstreamProcess(work), FakeUpstreamProcess(work)
        gateway = GatewayProcess(_config(work / "bench.db", a.url, b.url), work, env=BASE_ENV)
        try:
            seeded = run_cli("seed-config", "--config", str(gateway.config_path), env=BASE_ENV)
            assert seeded.returncode == 0, seeded.stderr
            time.sleep(1)  # key cache refresh
            asyncio.run(_run(gateway.url, 200, args.concurrency))  # warm-up
            healthy = asyncio.run(_run(gateway.url, args.requests, args.concurrency))
            a.control(mode="flaky", fail_ratio=0.5)
            failing = asyncio.run(_run(gateway.url, args.requests, args.concurrency))
            opened = _circuit_open(gateway.url)
            after_open = asyncio.run(_run(gateway.url, args.requests, args.concurrency))
        finally:
            gateway.stop()
            a.stop()
            b.stop()
    print(f"{'run':34} {'reqs':>6} {'success':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(_row("healthy (2 routes)", *healthy))
    print(_row("route a fails 50% (whole run)", *failing))
    print(
        _row("route a fails 50%, circuit open", *after_open) + ("" if opened else "  (circuit was not open)")
    )
    ratio = statistics.quantiles(after_open[1], n=100)[98] / statistics.quantiles(healthy[1], n=100)[98]
    print(f"p99 ratio, circuit open / healthy: {ratio:.2f}")


if __name__ == "__main__":
    main()
