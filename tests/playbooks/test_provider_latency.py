"""provider_latency.yml on a local deployment whose provider has two regional endpoints:
a fake upstream answering at once, and one that waits 200 ms before every response head.

The report's numbers are checked against what is known for certain: the slow endpoint
takes at least 200 ms (probe and traffic), the fast one far less, and the threshold
(150 ms) sits between them. Nothing depends on how loaded this machine is beyond the fast
loopback upstream answering within 150 ms.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.playbooks.conftest import RELEASE_V1, Deployment
from tests.support.processes import FakeUpstreamProcess

pytestmark = pytest.mark.slow

SLOW_SECONDS = 0.2
THRESHOLD_MS = 150
REQUESTS = 60


@pytest.fixture(scope="module")
def slow_upstream(module_launcher) -> FakeUpstreamProcess:
    upstream = module_launcher.upstream(mode="slow_first_byte")
    upstream.control(delay=SLOW_SECONDS)
    return upstream


@pytest.fixture(scope="module")
def fast_upstream(module_launcher) -> FakeUpstreamProcess:
    return module_launcher.upstream()


@pytest.fixture(scope="module")
def regional_deployment(deployment_factory, slow_upstream, fast_upstream) -> Deployment:
    deployment = deployment_factory(
        gateway_providers=[
            {"name": "echo", "type": "echo"},
            {
                "name": "multi",
                "type": "openai_compat",
                "pricing_provider_id": "self_hosted",
                # The slow region first: only measured latency moves traffic to the other.
                "endpoints": [
                    {"region": "eu", "base_url": slow_upstream.url},
                    {"region": "us", "base_url": fast_upstream.url},
                ],
            },
        ],
        gateway_models=[
            {
                "name": "echo-1",
                "operations": ["chat", "embeddings"],
                "routes": [{"provider": "echo", "upstream_model": "echo-1"}],
            },
            {"name": "regional", "routes": [{"provider": "multi", "upstream_model": "fake-1"}]},
        ],
    )
    deployment.ok("deploy.yml", gateway_wheel=str(deployment.releases.wheels[RELEASE_V1]))
    return deployment


def _traffic(deployment: Deployment, count: int) -> None:
    key = deployment.secrets()["GATEWAY_SEED_KEY"]
    body = {"model": "regional", "messages": [{"role": "user", "content": "latency test"}]}
    with httpx.Client(
        base_url=deployment.url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as client:
        for _ in range(count):
            answer = client.post("/v1/chat/completions", json=body)
            assert answer.status_code == 200, answer.text


def test_report_flags_the_slow_region_and_not_the_fast_one(
    regional_deployment: Deployment, slow_upstream, fast_upstream, tmp_path: Path
) -> None:
    _traffic(regional_deployment, REQUESTS)
    slow_served, fast_served = slow_upstream.stats()["requests"], fast_upstream.stats()["requests"]
    # Each instance measures both regions, then sends (almost) everything to the fast one.
    assert slow_served + fast_served == REQUESTS and slow_served <= 6, (slow_served, fast_served)

    report_file = tmp_path / "latency.json"
    run = regional_deployment.run(
        "provider_latency.yml", latency_threshold_ms=THRESHOLD_MS, latency_report_file=str(report_file)
    )
    assert run.rc != 0 and "Slower than 150 ms" in run.output, run.output[-4000:]
    report = json.loads(report_file.read_text())

    probes = {p["region"]: p for p in report["probes"] if p["provider"] == "multi"}
    assert probes["eu"]["ok"] and probes["eu"]["status"] == 200
    assert probes["eu"]["latency_ms"] >= SLOW_SECONDS * 1000
    assert probes["us"]["ok"] and probes["us"]["latency_ms"] < THRESHOLD_MS

    endpoints = {(r["instance"], r["region"]): r for r in report["endpoints"] if r["provider"] == "multi"}
    # Both instances reported, and the sum over them.
    assert {instance for instance, _ in endpoints} == {"a", "b", "all"}
    assert endpoints[("all", "eu")]["count"] == slow_served
    assert endpoints[("all", "us")]["count"] == fast_served
    # Samples of >= 200 ms lie in the (100, 250] ms bucket or above: p50 >= 175 ms.
    assert endpoints[("all", "eu")]["p50_ms"] > THRESHOLD_MS
    assert endpoints[("all", "us")]["p95_ms"] < THRESHOLD_MS
    providers = {(r["instance"], r["provider"]): r for r in report["providers"]}
    assert providers[("all", "multi")]["count"] == REQUESTS

    flagged = report["flagged"]
    assert any(f.startswith("multi/eu: probe ") for f in flagged), flagged
    assert any(f.startswith("multi/eu: traffic p95 ") for f in flagged), flagged
    assert not any(f.startswith("multi/us") for f in flagged), flagged
    assert "multi/eu: probe" in run.output


def test_report_passes_under_a_higher_threshold_and_in_check_mode(regional_deployment: Deployment) -> None:
    run = regional_deployment.ok("provider_latency.yml", "--check", "--diff", latency_threshold_ms=5000)
    assert "slower than 5000 ms" in run.output and run.recap["failed"] == 0
