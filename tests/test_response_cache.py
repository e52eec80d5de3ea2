"""The response cache in Redis, with real processes: two gateway replicas on PostgreSQL share
entries through a redis-server of this test's own; Redis stopped or hung is a miss, never a
failed request, and the cache works again once Redis is back."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway_app.response_cache import REDIS_PREFIX
from tests.conftest import BASE_ENV, SEED_KEY, Databases, Launcher, base_config
from tests.support.admin import AdminClient
from tests.support.processes import GatewayProcess, RedisNode, run_cli, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CHAT = {"model": "echo-1", "messages": [{"role": "user", "content": "cache me"}], "temperature": 0}


@pytest.fixture
def redis_node(tmp_path: Path) -> Iterator[RedisNode]:
    node = RedisNode(tmp_path)
    yield node
    node.stop()


def _config(db_url: str, redis_port: int) -> dict[str, Any]:
    config = base_config(db_url)
    config["models"][0]["cache"] = {"ttl_seconds": 120}
    config["rate_limits"] = {"redis_url": f"literal.redis://127.0.0.1:{redis_port}/0"}
    return config


def _chat(gateway: GatewayProcess, body: dict[str, Any] = CHAT) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {SEED_KEY}"},
        timeout=30,
    )


def _metric(gateway: GatewayProcess, name: str) -> float:
    for line in httpx.get(gateway.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_replicas_share_entries_in_redis_and_a_redis_outage_is_a_miss(
    databases: Databases, launcher: Launcher, redis_node: RedisNode, tmp_path: Path
) -> None:
    url = databases.new("postgres")
    first = launcher.gateway(_config(url, redis_node.port))
    second = launcher.gateway(_config(url, redis_node.port), seed=False)

    miss = _chat(first)
    assert miss.status_code == 200 and miss.headers["x-gateway-cache"] == "miss"
    # The store runs after the answer: the entry lands in Redis a moment later.
    names = wait_until(lambda: redis_node.client.keys(REDIS_PREFIX + "echo-1:*"))
    assert len(names) == 1 and 0 < redis_node.client.pttl(names[0]) <= 120_000
    hit = _chat(second)  # the other replica finds it
    assert hit.status_code == 200 and hit.headers["x-gateway-cache"] == "hit"
    assert hit.content == miss.content

    admin = AdminClient(second.url)
    state = admin.get("/cache").json()
    assert state["store"] == "redis" and state["models"]["echo-1"]["hits"] == 1
    flushed = admin.post("/cache/flush", {"model": "echo-1"})
    assert flushed.status_code == 200 and flushed.json()["flushed"] == 1
    assert redis_node.client.keys(REDIS_PREFIX + "*") == []
    assert _chat(first).headers["x-gateway-cache"] == "miss"
    wait_until(lambda: redis_node.client.keys(REDIS_PREFIX + "*"))
    # The CLI flushes the Redis store directly (the in-process one only lives in the instances).
    cli = run_cli("cache", "flush", "--pattern", "echo-*", "--config", str(first.config_path), env=BASE_ENV)
    assert cli.returncode == 0 and cli.stdout.strip() == "flushed 1 entries of echo-1 (redis store)", (
        cli.stderr
    )
    assert redis_node.client.keys(REDIS_PREFIX + "*") == []
    assert _chat(second).headers["x-gateway-cache"] == "miss"
    wait_until(lambda: redis_node.client.keys(REDIS_PREFIX + "*"))

    # Redis hung (SIGSTOP): each command waits at most its timeout; the request is a miss.
    redis_node.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        hung = _chat(second)
        hung_seconds = time.monotonic() - started
        assert hung.status_code == 200 and hung.headers["x-gateway-cache"] == "miss"
        assert hung_seconds < 10, f"a hung Redis held the request {hung_seconds:.1f}s"
    finally:
        redis_node.proc.send_signal(signal.SIGCONT)

    # Redis stopped: still served, counted, and an admin flush says why it cannot work.
    redis_node.stop()
    for _ in range(3):
        down = _chat(first)
        assert down.status_code == 200 and down.headers["x-gateway-cache"] == "miss"
    assert _metric(first, "gateway_cache_errors_total") >= 1
    assert _metric(second, "gateway_cache_errors_total") >= 1
    refused = admin.post("/cache/flush")
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "cache_store_unavailable"

    # Redis back on the same port (empty): stored again after the retry pause, then hits.
    restarted = RedisNode(tmp_path, port=redis_node.port)
    try:
        time.sleep(2.5)  # _REDIS_RETRY_SECONDS: lookups skip Redis this long after a failure
        wait_until(lambda: _chat(first).headers["x-gateway-cache"] == "hit", timeout=30)
        assert restarted.client.keys(REDIS_PREFIX + "echo-1:*")
    finally:
        restarted.stop()


def test_the_cli_flush_refuses_the_in_process_store(tmp_path: Path) -> None:
    config = base_config(f"sqlite:///{tmp_path / 'gateway.db'}")
    config["models"][0]["cache"] = {"ttl_seconds": 60}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    done = run_cli("cache", "flush", "--config", str(path), env=BASE_ENV)
    assert done.returncode == 2 and "POST /admin/api/cache/flush on every instance" in done.stderr
