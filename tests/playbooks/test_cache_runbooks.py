"""cache_warm.yml and cache_flush.yml on a local deployment whose model opts into the response
cache (in-process store, two instances behind haproxy), checked on the outcome: hits and the hit
rate read from every instance's /metrics after a warm, misses after a flush, idempotent reruns,
--check changing nothing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.playbooks.conftest import RELEASE_V1, Deployment

pytestmark = pytest.mark.slow

REQUESTS = [
    {
        "model": "echo-1",
        "messages": [{"role": "user", "content": "what is the status page?"}],
        "temperature": 0,
    },
    {
        "model": "echo-1",
        "messages": [{"role": "user", "content": "how do I rotate a key?"}],
        "temperature": 0,
    },
    {"model": "echo-1", "input": ["runbook", "cache"]},
]


@pytest.fixture(scope="module")
def cached_deployment(deployment_factory) -> Deployment:
    deployment = deployment_factory(
        gateway_models=[
            {
                "name": "echo-1",
                "operations": ["chat", "embeddings"],
                "routes": [{"provider": "echo", "upstream_model": "echo-1"}],
                "cache": {"ttl_seconds": 600},
            }
        ]
    )
    deployment.ok("deploy.yml", gateway_wheel=str(deployment.releases.wheels[RELEASE_V1]))
    return deployment


@pytest.fixture(scope="module")
def requests_file(cached_deployment: Deployment) -> Path:
    path = cached_deployment.root.parent / "warm-requests.jsonl"
    lines = ["# popular requests", *(json.dumps(r) for r in REQUESTS), ""]
    path.write_text("\n".join(lines))
    return path


def _send(deployment: Deployment, request: dict) -> httpx.Response:
    path = "/v1/embeddings" if "input" in request else "/v1/chat/completions"
    key = deployment.secrets()["GATEWAY_SEED_KEY"]
    return httpx.post(
        deployment.url + path, json=request, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def _counter(deployment: Deployment, name: str) -> dict[str, float]:
    """The counter's echo-1 value on each instance, read from the instance's own /metrics."""
    values = {}
    for instance in deployment.instances:
        text = httpx.get(f"http://127.0.0.1:{instance['port']}/metrics", timeout=10).text
        line = next((x for x in text.splitlines() if x.startswith(f'{name}{{model="echo-1"}} ')), None)
        values[instance["name"]] = float(line.rsplit(" ", 1)[1]) if line else 0.0
    return values


def test_warm_then_hits_then_flush_then_misses(cached_deployment: Deployment, requests_file: Path) -> None:
    d = cached_deployment
    check = d.ok("cache_warm.yml", "--check", cache_warm_file=str(requests_file))
    assert "would replay 3 requests on a, b" in check.output
    assert sum(_counter(d, "gateway_cache_misses_total").values()) == 0  # --check sent nothing

    warm = d.ok("cache_warm.yml", cache_warm_file=str(requests_file))
    assert warm.recap["failed"] == 0 and warm.recap["changed"] > 0
    for name in ("a", "b"):
        assert f"{name}: replayed 3: stored 3, already cached 0, not cacheable 0, failed 0" in warm.output
    assert d.secrets()["GATEWAY_SEED_KEY"] not in warm.output

    # Through the load balancer, whichever instance answers: every request is a hit.
    for _ in range(4):
        for request in REQUESTS:
            answer = _send(d, request)
            assert answer.status_code == 200 and answer.headers["x-gateway-cache"] == "hit"
    hits, misses = _counter(d, "gateway_cache_hits_total"), _counter(d, "gateway_cache_misses_total")
    assert misses == {"a": 3.0, "b": 3.0}  # the warm's own requests
    assert sum(hits.values()) == 12
    hit_rate = sum(hits.values()) / (sum(hits.values()) + sum(misses.values()))
    assert hit_rate == pytest.approx(12 / 18)

    again = d.ok("cache_warm.yml", cache_warm_file=str(requests_file))
    assert again.recap["changed"] == 0  # everything was cached already
    assert "stored 0, already cached 3" in again.output

    dry = d.ok("cache_flush.yml", "--check", cache_model="echo-1")
    assert dry.recap["changed"] == 0 and "would flush echo-1" in dry.output
    assert _send(d, REQUESTS[0]).headers["x-gateway-cache"] == "hit"

    flush = d.ok("cache_flush.yml", cache_model="echo-1")
    assert flush.recap["changed"] > 0
    assert "a: 200 flushed 3 entries of echo-1 (memory store)" in flush.output
    assert "b: 200 flushed 3 entries of echo-1 (memory store)" in flush.output
    for request in REQUESTS:
        assert _send(d, request).headers["x-gateway-cache"] == "miss"

    by_pattern = d.ok("cache_flush.yml", cache_pattern="echo-*")
    assert by_pattern.recap["changed"] > 0  # the misses above were stored again
    everything = d.ok("cache_flush.yml")
    assert everything.recap["changed"] == 0 and "a: 200 flushed 0 entries of echo-1" in everything.output

    unknown = d.run("cache_flush.yml", cache_model="no-such-model")
    assert unknown.rc != 0 and "Model 'no-such-model' does not use the response cache" in unknown.output
    missing = d.run("cache_warm.yml")
    assert missing.rc != 0 and "-e cache_warm_file=PATH" in missing.output
