"""Regional endpoints of a provider, in process: traffic goes to the faster healthy endpoint,
falls over to the other on failure (no client error), and every endpoint shows in /metrics.

Two fake upstreams (tests/support/fake_upstream.py) on this event loop; the slow one waits
200 ms before its response head. No assertion depends on how fast this machine is, only on
which upstream is slower than the other.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway_app.config import ConfigError, parse_settings
from gateway_app.providers.regional import EXPLORE_EVERY
from tests.conftest import BASE_ENV, base_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import free_port
from tests.unit.conftest import InProcessGateway, StartGateway, auth, sqlite_config

CHAT = {"model": "regional", "messages": [{"role": "user", "content": "hi"}]}
SLOW_SECONDS = 0.2


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[[], Any]]:
    """start() -> (FakeUpstream, its /v1 base URL), served on this loop until the test ends."""
    async with AsyncExitStack() as stack:

        async def start() -> tuple[FakeUpstream, str]:
            upstream = FakeUpstream()
            runner = web.AppRunner(upstream.app(), access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            port = free_port()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            return upstream, f"http://127.0.0.1:{port}/v1"

        yield start


def regional_config(tmp_path: Path, endpoints: list[dict[str, str]], **resilience: Any) -> dict[str, Any]:
    """The base config plus provider 'multi' with these endpoints; model 'regional' routes to it,
    then (priority 1) to the offline echo provider."""
    config = sqlite_config(tmp_path)
    config["providers"].append(
        {
            "name": "multi",
            "type": "openai_compat",
            "endpoints": endpoints,
            "pricing_provider_id": "self_hosted",
            "timeout_seconds": 5,
        }
    )
    config["models"].append(
        {
            "name": "regional",
            "routes": [
                {"provider": "multi", "upstream_model": "fake-1"},
                {"provider": "echo", "upstream_model": "echo-1", "priority": 1},
            ],
        }
    )
    if resilience:
        config["resilience"] = resilience
    return config


async def chat(gateway: InProcessGateway) -> str:
    response = await gateway.client.post("/v1/chat/completions", headers=auth(), json=CHAT)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


async def metric_samples(gateway: InProcessGateway, name: str) -> dict[str, float]:
    """{region: value} of gateway_<name>{provider="multi", region=...}."""
    text = (await gateway.client.get("/metrics")).text
    pattern = re.compile(rf'^gateway_{name}\{{provider="multi",region="([a-z0-9_-]+)"\}} (\S+)$', re.M)
    return {region: float(value) for region, value in pattern.findall(text)}


async def test_traffic_converges_to_the_faster_endpoint(
    start_gateway: StartGateway, tmp_path: Path, upstreams
) -> None:
    slow, slow_url = await upstreams()
    fast, fast_url = await upstreams()
    slow.mode, slow.delay = "slow_first_byte", SLOW_SECONDS
    # The slow endpoint is listed first: only measured latency can move traffic off it.
    config = regional_config(
        tmp_path, [{"region": "eu", "base_url": slow_url}, {"region": "us", "base_url": fast_url}]
    )
    gateway = await start_gateway(config)
    calls = 2 * EXPLORE_EVERY
    for _ in range(calls):
        assert await chat(gateway) == "fake says hi"
    # Each endpoint is measured once, then the faster one takes all but the exploring calls.
    assert slow.requests <= 2, (slow.requests, fast.requests)
    assert fast.requests >= calls - 2 and slow.requests + fast.requests == calls
    ewma = await metric_samples(gateway, "upstream_endpoint_ewma_seconds")
    assert ewma["eu"] >= SLOW_SECONDS and ewma["us"] < ewma["eu"], ewma
    counts = await metric_samples(gateway, "upstream_endpoint_latency_seconds_count")
    assert counts == {"eu": slow.requests, "us": fast.requests}


async def test_faster_endpoint_failing_the_other_serves_without_client_errors(
    start_gateway: StartGateway, tmp_path: Path, upstreams
) -> None:
    slow, slow_url = await upstreams()
    fast, fast_url = await upstreams()
    slow.mode, slow.delay = "slow_first_byte", SLOW_SECONDS
    config = regional_config(
        tmp_path,
        [{"region": "us", "base_url": fast_url}, {"region": "eu", "base_url": slow_url}],
        breaker_failure_threshold=3,
        breaker_open_seconds=60,
    )
    gateway = await start_gateway(config)
    for _ in range(3):  # both measured; the fast one preferred
        await chat(gateway)
    before = (fast.requests, slow.requests)
    fast.mode = "error500"
    for _ in range(8):
        # Served by the other region of the same provider, not by the echo fallback route.
        assert await chat(gateway) == "fake says hi"
    # Three failures opened the fast endpoint's circuit: later calls skip it without trying.
    assert fast.requests - before[0] == 3
    assert slow.requests - before[1] == 8
    state = await metric_samples(gateway, "upstream_endpoint_circuit_state")
    assert state == {"us": 2.0, "eu": 0.0}
    failures = (await gateway.client.get("/metrics")).text
    assert (
        'gateway_upstream_endpoint_attempts_total{outcome="failure",provider="multi",region="us"} 3.0'
        in failures
    )
    providers = (
        await gateway.client.get("/admin/api/providers", headers=await gateway.admin_headers())
    ).json()
    multi = next(p for p in providers["data"] if p["name"] == "multi")
    assert [(e["region"], e["circuit"]) for e in multi["endpoints"]] == [("us", "open"), ("eu", "closed")]
    assert "HTTP 500" in multi["endpoints"][0]["last_error"] and multi["endpoints"][1]["latency_ms"] >= 200
    # The route itself never failed: its circuit stays closed.
    route = gateway.app.gateway.started.router.routes_by_key["regional/multi/fake-1"]
    assert route.health.state == "closed" and route.health.failures_total == 0


async def test_every_endpoint_failing_falls_back_to_the_next_route(
    start_gateway: StartGateway, tmp_path: Path, upstreams
) -> None:
    broken, broken_url = await upstreams()
    broken.mode = "error500"
    refused = "http://127.0.0.1:9/v1"  # discard port: connection refused
    config = regional_config(
        tmp_path, [{"region": "eu", "base_url": broken_url}, {"region": "us", "base_url": refused}]
    )
    gateway = await start_gateway(config)
    assert await chat(gateway) == "echo: hi"
    assert broken.requests == 1
    logs = await gateway.client.get("/metrics")
    assert (
        'gateway_upstream_endpoint_attempts_total{outcome="failure",provider="multi",region="us"} 1.0'
        in logs.text
    )


def _problems(provider: dict[str, Any]) -> dict[str, str]:
    config = base_config("sqlite:///unused.db")
    config["providers"].append({"name": "multi", "pricing_provider_id": "self_hosted", **provider})
    with pytest.raises(ConfigError) as caught:
        parse_settings(config, "test.yaml", environ=BASE_ENV)
    return dict(caught.value.problems)


def test_endpoint_config_errors_name_the_field() -> None:
    eu = {"region": "eu", "base_url": "https://eu.example.com/v1"}
    assert _problems({"type": "openai_compat", "endpoints": [eu, {**eu, "base_url": "https://x/v1"}]}) == {
        "providers[1].endpoints[1].region": "region 'eu' is already used by providers[1].endpoints[0]"
    }
    assert _problems({"type": "openai_compat", "base_url": "https://a/v1", "endpoints": [eu]}) == {
        "providers[1].endpoints": "give either base_url or endpoints, not both"
    }
    assert _problems({"type": "echo", "endpoints": [eu]}) == {
        "providers[1].endpoints": "only openai_compat providers take endpoints, not echo"
    }
    bad_url = _problems(
        {"type": "openai_compat", "endpoints": [eu, {"region": "us", "base_url": "eu.example"}]}
    )
    assert (
        list(bad_url) == ["providers[1].endpoints[1].base_url"]
        and "pattern" in bad_url["providers[1].endpoints[1].base_url"]
    )
    assert list(
        _problems({"type": "openai_compat", "endpoints": [{"region": "EU!", "base_url": "https://a"}]})
    ) == ["providers[1].endpoints[0].region"]
    assert list(_problems({"type": "openai_compat", "endpoints": []})) == ["providers[1].endpoints"]
    assert _problems({"type": "openai_compat"}) == {
        "providers[1]": "openai_compat providers need base_url (or endpoints)"
    }


def test_order_fastest_first_unmeasured_first_and_one_exploring_call_in_explore_every() -> None:
    from gateway_app.config import ProviderSettings, ResilienceSettings
    from gateway_app.providers.regional import RegionalProvider

    settings = ProviderSettings(
        name="multi",
        type="openai_compat",
        pricing_provider_id="self_hosted",
        endpoints=[{"region": r, "base_url": f"https://{r}.example.com/v1"} for r in ("eu", "us", "ap")],
    )
    provider = RegionalProvider(settings, ResilienceSettings())
    eu, us, ap = provider.endpoints
    assert provider.order() == [eu, us, ap]  # nothing measured: config order
    eu.succeeded(0.2)
    assert provider.order() == [us, eu, ap]  # unmeasured before measured
    us.succeeded(0.05)
    ap.succeeded(0.1)
    provider._calls = 0
    firsts = [provider.order()[0].region for _ in range(4 * EXPLORE_EVERY)]
    # The fastest first; every EXPLORE_EVERY-th call the next endpoint in turn goes first
    # (us, ap, eu, us for the 4 exploring calls here).
    assert firsts.count("us") == 4 * EXPLORE_EVERY - 2 and sorted(set(firsts)) == ["ap", "eu", "us"]
    provider._calls = 0
    assert provider.order() == [us, eu, ap]  # then config order, for falling over
    # us slows down (its average follows its samples): ap becomes the first choice.
    for _ in range(10):
        us.succeeded(0.3)
    assert provider.order() == [ap, eu, us]
