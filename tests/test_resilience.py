"""Fault injection with real upstreams: fallback, circuit breakers, admin overrides across replicas.

Two gateway processes share one database (per backend). Model ``m`` has a
primary route on upstream ``a`` (priority 0) and a fallback on ``b``
(priority 1); ``a`` is switched into failure modes. Model ``dead`` has its
primary on a port where nothing listens.
"""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SEED_KEY, base_config
from tests.support.admin import bearer, login
from tests.support.processes import refused_port, wait_until

OPEN_SECONDS = 2.0
THRESHOLD = 3
REFRESH_SECONDS = 0.5
AUTH = {"Authorization": f"Bearer {SEED_KEY}"}
ROUTE_A = "m/a/model-a"


def _provider(name: str, url: str) -> dict:
    return {
        "name": name,
        "type": "openai_compat",
        "base_url": url,
        "pricing_provider_id": "self_hosted",
        "timeout_seconds": 1,
        "connect_timeout_seconds": 1,
    }


def resilience_config(
    db_url: str, a_url: str, b_url: str, down_port: int, open_seconds: float = OPEN_SECONDS
) -> dict:
    config = base_config(db_url)
    config["server"]["request_timeout_seconds"] = 5
    config["providers"] += [
        _provider("a", a_url),
        _provider("b", b_url),
        _provider("down", f"http://127.0.0.1:{down_port}/v1"),
    ]
    config["models"] += [
        {
            "name": "m",
            "routes": [
                {"provider": "a", "upstream_model": "model-a", "priority": 0},
                {"provider": "b", "upstream_model": "model-b", "priority": 1},
            ],
        },
        {
            "name": "dead",
            "routes": [
                {"provider": "down", "upstream_model": "x", "priority": 0},
                {"provider": "b", "upstream_model": "model-b", "priority": 1},
            ],
        },
    ]
    config["resilience"] = {
        "breaker_failure_threshold": THRESHOLD,
        "breaker_window_seconds": 30,
        "breaker_open_seconds": open_seconds,
        "backoff_seconds": 0.01,
        "state_refresh_seconds": REFRESH_SECONDS,
    }
    return config


@pytest.fixture(scope="module")
def stack(module_db_url, module_launcher):
    a = module_launcher.upstream()
    b = module_launcher.upstream()
    with refused_port() as down_port:  # provider "down": nothing listens there, for the whole module
        first = module_launcher.gateway(resilience_config(module_db_url, a.url, b.url, down_port))
        # The second replica waits long before probing, so only an admin reset can close its circuits.
        second = module_launcher.gateway(
            resilience_config(module_db_url, a.url, b.url, down_port, open_seconds=600), seed=False
        )
        yield first, second, a, b


@pytest.fixture
def env(stack):
    first, second, a, b = stack
    token = login(first.url).json()["token"]
    yield first, second, a, b, token
    a.control(mode="ok", reset_stats=True)
    for gateway in (first, second):
        httpx.post(gateway.url + "/admin/api/providers/a/enable", headers=bearer(token)).raise_for_status()
        httpx.post(
            gateway.url + "/admin/api/providers/a/reset-circuit", headers=bearer(token)
        ).raise_for_status()


def chat(gateway, model: str = "m", stream: bool = False) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    return httpx.post(gateway.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=15)


def route_state(gateway, token: str, key: str = ROUTE_A) -> dict:
    providers = httpx.get(gateway.url + "/admin/api/providers", headers=bearer(token)).json()["data"]
    return next(r for p in providers for r in p["routes"] if r["key"] == key)


def metric(gateway, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(httpx.get(gateway.url + "/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_500s_fall_back_then_the_circuit_opens_and_recovers(env) -> None:
    first, _, a, _, token = env
    a.control(mode="error500", reset_stats=True)
    answers = [chat(first) for _ in range(10)]
    assert [r.status_code for r in answers] == [200] * 10
    assert {r.json()["model"] for r in answers} == {"model-b"}
    # After THRESHOLD failures the breaker opened: the bad route saw no more traffic.
    assert a.stats()["requests"] == THRESHOLD
    state = route_state(first, token)
    assert state["circuit"] == "open" and "HTTP 500" in state["last_error"]
    assert metric(first, "gateway_circuit_state", route=ROUTE_A) == 2
    assert metric(first, "gateway_upstream_attempts_total", route=ROUTE_A, outcome="failure") >= THRESHOLD

    a.control(mode="ok")
    time.sleep(OPEN_SECONDS + 0.2)
    assert chat(first).json()["model"] == "model-a"  # the half-open probe succeeded
    assert route_state(first, token)["circuit"] == "closed"
    assert metric(first, "gateway_circuit_state", route=ROUTE_A) == 0


@pytest.mark.parametrize("mode", ["hang", "slow_first_byte"])
def test_no_first_byte_falls_back_within_the_deadline(env, mode) -> None:
    first, _, a, _, _ = env
    a.control(mode=mode, delay=3, reset_stats=True)
    started = time.monotonic()
    for _ in range(THRESHOLD):
        response = chat(first)
        assert response.status_code == 200 and response.json()["model"] == "model-b"
    assert time.monotonic() - started < 5 * THRESHOLD  # each well inside its 5 s deadline
    started = time.monotonic()
    assert chat(first, stream=True).status_code == 200  # circuit open: a is not waited on
    assert time.monotonic() - started < 0.9  # under a's 1 s timeout
    assert a.stats()["requests"] == THRESHOLD


def test_refused_connections_fall_back_and_attempts_are_recorded(env) -> None:
    first, _, _, _, _ = env
    for _ in range(THRESHOLD + 2):
        response = chat(first, model="dead")
        assert response.status_code == 200 and response.json()["model"] == "model-b"
    state = route_state(first, env[4], "dead/down/x")
    assert state["circuit"] == "open" and "unreachable" in state["last_error"]


def test_all_circuits_open_answers_503_at_once(env) -> None:
    first, _, a, _, token = env
    httpx.post(first.url + "/admin/api/providers/b/disable", headers=bearer(token)).raise_for_status()
    try:
        a.control(mode="error500")
        for _ in range(THRESHOLD):
            assert chat(first).status_code == 502
        refused = chat(first)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_route_available"
    finally:
        httpx.post(first.url + "/admin/api/providers/b/enable", headers=bearer(token)).raise_for_status()


def test_disabled_provider_gets_no_traffic_on_another_replica(env) -> None:
    first, second, a, _, token = env
    assert chat(second).json()["model"] == "model-a"
    disabled = httpx.post(first.url + "/admin/api/providers/a/disable", headers=bearer(token))
    assert disabled.status_code == 200
    time.sleep(REFRESH_SECONDS * 4)  # the stated bound: state_refresh_seconds, with margin
    a.control(reset_stats=True)
    assert [chat(second).json()["model"] for _ in range(5)] == ["model-b"] * 5
    assert a.stats()["requests"] == 0
    second_token = login(second.url).json()["token"]
    provider = next(
        p
        for p in httpx.get(second.url + "/admin/api/providers", headers=bearer(second_token)).json()["data"]
        if p["name"] == "a"
    )
    assert provider["enabled"] is False
    assert metric(second, "gateway_route_enabled", route=ROUTE_A) == 0

    httpx.post(first.url + "/admin/api/providers/a/enable", headers=bearer(token)).raise_for_status()
    wait_until(lambda: chat(second).json()["model"] == "model-a", timeout=5)


def test_route_disable_and_circuit_reset_reach_another_replica(env) -> None:
    first, second, a, _, token = env
    a.control(mode="error500")
    for _ in range(THRESHOLD):
        chat(second)
    second_token = login(second.url).json()["token"]
    assert route_state(second, second_token)["circuit"] == "open"
    a.control(mode="ok")
    reset = httpx.post(
        first.url + "/admin/api/routes/reset-circuit", json={"key": ROUTE_A}, headers=bearer(token)
    )
    assert reset.status_code == 200
    wait_until(lambda: route_state(second, second_token)["circuit"] == "closed", timeout=5)
    assert chat(second).json()["model"] == "model-a"

    off = httpx.post(first.url + "/admin/api/routes/disable", json={"key": ROUTE_A}, headers=bearer(token))
    assert off.status_code == 200
    wait_until(lambda: route_state(second, second_token)["enabled"] is False, timeout=5)
    assert chat(second).json()["model"] == "model-b"
    on = httpx.post(first.url + "/admin/api/routes/enable", json={"key": ROUTE_A}, headers=bearer(token))
    assert on.status_code == 200
    unknown = httpx.post(
        first.url + "/admin/api/routes/disable", json={"key": "m/x/y"}, headers=bearer(token)
    )
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "route_not_found"


def test_health_check_probes_the_provider_now(env) -> None:
    first, _, a, _, token = env
    ok = httpx.post(first.url + "/admin/api/providers/a/health-check", headers=bearer(token)).json()
    assert ok["ok"] is True and ok["error"] is None and ok["latency_ms"] >= 0
    a.control(mode="error401")
    bad = httpx.post(first.url + "/admin/api/providers/a/health-check", headers=bearer(token)).json()
    assert bad["ok"] is False and "HTTP 401" in bad["error"]
    missing = httpx.post(first.url + "/admin/api/providers/nope/health-check", headers=bearer(token))
    assert missing.status_code == 404 and "configured: echo" in missing.json()["error"]["message"]


def test_metrics_show_the_traffic(env) -> None:
    first, _, _, _, _ = env
    assert chat(first).status_code == 200
    assert chat(first, stream=True).status_code == 200
    wait_until(lambda: (metric(first, "gateway_tokens_total", model="m", kind="prompt") or 0) > 0)
    assert metric(first, "gateway_requests_total", model="m", provider="a", status_class="2xx") >= 2
    assert metric(first, "gateway_request_duration_seconds_count", model="m") >= 2
    assert metric(first, "gateway_time_to_first_token_seconds_count", model="m") >= 1
    assert metric(first, "gateway_requests_in_flight") == 1 - 1  # none in flight between requests
    assert metric(first, "gateway_request_log_queue_depth") is not None
    assert metric(first, "gateway_request_log_dropped_total") == 0
    assert metric(first, "gateway_db_pool_connections_max") >= 1
    assert metric(first, "gateway_process_resident_memory_bytes") > 0


def test_metrics_pass_promtool_lint(env) -> None:
    first = env[0]
    assert chat(first).status_code == 200
    checked = subprocess.run(
        ["promtool", "check", "metrics"],
        input=httpx.get(first.url + "/metrics").text,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
