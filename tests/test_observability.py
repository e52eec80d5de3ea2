"""Rate limits (in process and shared through Redis) and OTLP export with and without a collector."""

from __future__ import annotations

import sqlite3
import time

import httpx

from tests.conftest import BASE_ENV, SEED_KEY, base_config
from tests.support.otlp_collector import OTLPCollectorStub
from tests.support.processes import run_cli, wait_until

AUTH = {"Authorization": f"Bearer {SEED_KEY}"}


def models(gateway, key: str = SEED_KEY) -> httpx.Response:
    return httpx.get(gateway.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)


def _same_minute(budget_seconds: float = 5.0) -> None:
    """Limits count per clock minute: do not let a test straddle the boundary."""
    if time.time() % 60 > 60 - budget_seconds:
        time.sleep(60 - time.time() % 60 + 0.1)


def _assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(response.headers["retry-after"]) <= 60


def test_in_process_limit_per_key(tmp_path, launcher) -> None:
    config = base_config(f"sqlite:///{tmp_path / 'rl.db'}")
    config["rate_limits"] = {"requests_per_minute": 3}
    gateway = launcher.gateway(config)
    _same_minute()
    assert [models(gateway).status_code for _ in range(3)] == [200] * 3
    _assert_limited(models(gateway))
    assert "gateway_rate_limited_requests_total 1.0" in httpx.get(gateway.url + "/metrics").text


def test_redis_limit_is_shared_by_replicas(module_db_url, launcher) -> None:
    config = base_config(module_db_url)
    config["rate_limits"] = {"requests_per_minute": 4, "redis_url": "literal.redis://127.0.0.1:6379/0"}
    first = launcher.gateway(config)
    second_config = base_config(module_db_url)
    second_config["rate_limits"] = config["rate_limits"]
    second = launcher.gateway(second_config, seed=False)
    # A key of its own: Redis outlives this test's databases, and its counters are per key.
    created = run_cli(
        "keys",
        "create",
        "--service-account",
        "tests",
        "--name",
        "rl",
        "--config",
        str(first.config_path),
        env=BASE_ENV,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    _same_minute(budget_seconds=10)
    wait_until(lambda: models(second, key).status_code == 200)  # both replicas know the key (1st request)
    assert [models(g, key).status_code for g in (first, second, first)] == [200] * 3
    _assert_limited(models(second, key))
    _assert_limited(models(first, key))


def test_unreachable_collector_is_a_warning_only(tmp_path, launcher, closed_port) -> None:
    db = tmp_path / "otel.db"
    config = base_config(f"sqlite:///{db}")
    config["server"]["otel_endpoint"] = f"http://127.0.0.1:{closed_port}"
    config["server"]["otel_sample_ratio"] = 1.0
    gateway = launcher.gateway(config, env={"OTEL_BSP_SCHEDULE_DELAY": "100"})
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200
    wait_until(lambda: httpx.get(gateway.url + "/readyz").json()["otel"].startswith("unreachable: "))
    assert httpx.get(gateway.url + "/readyz").status_code == 200
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        assert httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=AUTH).status_code == 200

    def logged() -> int:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM request_logs").fetchone()[0]

    wait_until(lambda: logged() == 3)
    assert "OTLP collector unreachable" in gateway.logs()


def test_traces_and_metrics_reach_a_collector(tmp_path, launcher) -> None:
    with OTLPCollectorStub() as collector:
        config = base_config(f"sqlite:///{tmp_path / 'otel.db'}")
        config["server"]["otel_endpoint"] = collector.url
        config["server"]["otel_metrics_endpoint"] = collector.url + "/v1/metrics"
        config["server"]["otel_sample_ratio"] = 1.0
        env = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_METRIC_EXPORT_INTERVAL": "300"}
        gateway = launcher.gateway(config, env=env)
        body = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=AUTH).status_code == 200
        wait_until(lambda: any(b"echo-1" in body for body in collector.bodies("/v1/traces")))
        wait_until(lambda: any(b"gateway.requests" in body for body in collector.bodies("/v1/metrics")))
        wait_until(lambda: httpx.get(gateway.url + "/readyz").json()["otel"] == "ok")
