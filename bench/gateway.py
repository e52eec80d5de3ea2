"""The gateway under test: a generated config, one `gateway serve` worker, a seeded key."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError
from gateway_app.storage import connect
from tests.support.processes import GatewayProcess, free_port, run_cli, wait_http

KEY_ENV = "GATEWAY_BENCH_KEY"
_DRAIN_POLL_SECONDS = 0.4
_DRAIN_UNCHANGED_POLLS = 2
_DRAIN_POLLS = 150


def config(db_url: str, upstreams: dict[str, str]) -> dict[str, Any]:
    """One openai_compat provider and one model per entry of `upstreams` (model name -> base URL)."""
    return {
        "server": {
            "host": "127.0.0.1",
            "port": free_port(),
            "shutdown_grace_seconds": 2,
            "log_level": "warning",
        },
        "database": {"url": f"literal.{db_url}", "migrations": "auto"},
        "providers": [
            {"name": model, "type": "openai_compat", "base_url": url, "pricing_provider_id": "openai"}
            for model, url in upstreams.items()
        ],
        "models": [
            {"name": model, "routes": [{"provider": model, "upstream_model": "gpt-4o-mini"}]}
            for model in upstreams
        ],
        "service_accounts": [{"name": "bench", "keys": [{"name": "bench", "secret": f"env.{KEY_ENV}"}]}],
        "request_logging": {"mode": "summary_only"},
    }


def start(settings: dict[str, Any], workdir: Path, key: str, cpus: set[int] | None) -> GatewayProcess:
    """Serve (pinned to `cpus` before it starts any thread), wait until ready, seed the key."""
    env = {KEY_ENV: key}
    gateway = GatewayProcess(settings, workdir, env=env, wait=False)
    try:
        if cpus is not None:
            # Threads started later (aiosqlite, executors) inherit the main thread's affinity.
            os.sched_setaffinity(gateway.proc.pid, cpus)
        try:
            wait_http(gateway.url + "/readyz", proc=gateway.proc)
        except (RuntimeError, TimeoutError) as exc:
            raise BenchError(f"gateway did not start ({exc}); its log:\n{gateway.logs()[-3000:]}") from None
        seeded = run_cli("seed-config", "--config", str(gateway.config_path), env=env)
        if seeded.returncode != 0:
            raise BenchError(f"gateway seed-config failed: {seeded.stderr.strip()}")
    except BaseException:
        gateway.stop(timeout=5)
        raise
    return gateway


@dataclass(frozen=True, slots=True)
class GatewayCost:
    cpu_us_per_request: float  # the gateway process (all threads), request-log writes included
    # Request-log rows written / requests answered: below 1, the writer dropped records.
    logged_fraction: float
    # Rows the writer still had to write when the load stopped: a backlog means it cannot keep up.
    log_backlog: int


@dataclass(frozen=True, slots=True)
class Mark:
    logged: int
    cpu_seconds: float


def mark(pid: int, db_url: str) -> Mark:
    """Where the gateway stands before a run, its request-log writer drained."""
    return Mark(drained_logged_requests(db_url), cpu_seconds(pid))


def cost_since(start: Mark, pid: int, db_url: str, requests: int) -> GatewayCost:
    """All the gateway's work for the `requests` answered since `start`, waiting for its log writer."""
    logged_at_stop = logged_requests(db_url)
    logged = drained_logged_requests(db_url, at_least=start.logged + requests)
    return GatewayCost(
        cpu_us_per_request=(cpu_seconds(pid) - start.cpu_seconds) / requests * 1e6,
        logged_fraction=(logged - start.logged) / requests,
        log_backlog=logged - logged_at_stop,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def logged_requests(db_url: str) -> int:
    """Rows in request_logs right now."""

    async def count() -> int:
        db = await connect(db_url, 1, 1)
        try:
            return await db.fetchval("SELECT count(*) FROM request_logs")
        finally:
            await db.close()

    return asyncio.run(count())


def drained_logged_requests(db_url: str, at_least: int = 0) -> int:
    """Rows in request_logs once the background writer is done with what it was given."""
    count, unchanged = logged_requests(db_url), 0
    for _ in range(_DRAIN_POLLS):
        if at_least and count >= at_least:  # every answered request is logged
            return count
        if unchanged == _DRAIN_UNCHANGED_POLLS:  # a writer with a queue flushes without pause
            return count
        time.sleep(_DRAIN_POLL_SECONDS)
        now = logged_requests(db_url)
        unchanged = unchanged + 1 if now == count else 0
        count = now
    raise BenchError(f"the gateway's request log was still being written after {_DRAIN_POLLS} polls")
