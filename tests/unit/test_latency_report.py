"""provider_latency.yml's arithmetic (playbooks/filter_plugins/latency_report.py) and
`gateway probe-endpoints` against a real fake upstream, without a deployment."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway_app.config import parse_settings
from gateway_app.endpoint_probe import as_dicts, probe_endpoints, shown_url
from tests.conftest import BASE_ENV, base_config
from tests.support.processes import REPO, run_cli

_spec = importlib.util.spec_from_file_location(
    "latency_report", REPO / "playbooks" / "filter_plugins" / "latency_report.py"
)
assert _spec is not None and _spec.loader is not None
latency_report: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(latency_report)

# Two instances' /metrics: region eu has 2 samples in (0.1, 0.25], us 9 in (0, 0.01] and 1 in (0.01, 0.025].
METRICS_A = """# TYPE gateway_upstream_endpoint_latency_seconds histogram
gateway_upstream_endpoint_latency_seconds_bucket{le="0.01",provider="multi",region="eu"} 0.0
gateway_upstream_endpoint_latency_seconds_bucket{le="0.1",provider="multi",region="eu"} 0.0
gateway_upstream_endpoint_latency_seconds_bucket{le="0.25",provider="multi",region="eu"} 1.0
gateway_upstream_endpoint_latency_seconds_bucket{le="+Inf",provider="multi",region="eu"} 1.0
gateway_upstream_endpoint_latency_seconds_count{provider="multi",region="eu"} 1.0
gateway_upstream_endpoint_latency_seconds_bucket{le="0.01",provider="multi",region="us"} 5.0
gateway_upstream_endpoint_latency_seconds_bucket{le="0.025",provider="multi",region="us"} 5.0
gateway_upstream_endpoint_latency_seconds_bucket{le="+Inf",provider="multi",region="us"} 5.0
gateway_upstream_endpoint_latency_seconds_sum{provider="multi",region="us"} 0.02
"""
METRICS_B = METRICS_A.replace(
    'le="0.025",provider="multi",region="us"} 5.0', 'le="0.025",provider="multi",region="us"} 6.0'
).replace('le="+Inf",provider="multi",region="us"} 5.0', 'le="+Inf",provider="multi",region="us"} 6.0')
ENDPOINTS = "gateway_upstream_endpoint_latency_seconds"
REFUSED = "http://127.0.0.1:9/v1"  # discard port: connection refused


def test_quantiles_interpolate_inside_the_bucket_like_promql() -> None:
    cumulative = [(0.1, 0.0), (0.25, 4.0), (float("inf"), 4.0)]
    assert latency_report.quantile(0.5, cumulative) == pytest.approx(0.175)
    assert latency_report.quantile(0.95, cumulative) == pytest.approx(0.2425)
    # A rank in +Inf answers the highest finite bound; no samples, no answer.
    assert latency_report.quantile(0.99, [(0.1, 1.0), (float("inf"), 10.0)]) == 0.1
    assert latency_report.quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_rows_per_instance_and_over_all_instances() -> None:
    rows = latency_report.histogram_quantiles(
        {"a": METRICS_A, "b": METRICS_B}, ENDPOINTS, ["provider", "region"]
    )
    by = {(r["instance"], r["region"]): r for r in rows}
    assert sorted(by) == [("a", "eu"), ("a", "us"), ("all", "eu"), ("all", "us"), ("b", "eu"), ("b", "us")]
    assert by[("all", "eu")] == {
        "instance": "all",
        "provider": "multi",
        "region": "eu",
        "count": 2,
        "p50_ms": 175.0,
        "p95_ms": 242.5,
    }
    assert by[("all", "us")]["count"] == 11 and by[("all", "us")]["p50_ms"] == 5.5
    # b's one sample above 10 ms: p95 of b lands in (10, 25] ms.
    assert 10 < by[("b", "us")]["p95_ms"] <= 25 and by[("a", "us")]["p95_ms"] <= 10
    assert latency_report.histogram_quantiles(METRICS_A, ENDPOINTS, ["region"], [0.99])[0] == {
        "region": "eu",
        "count": 1,
        "p99_ms": 248.5,
    }


def test_flags_name_what_is_slower_than_the_threshold() -> None:
    probes = [
        {"provider": "multi", "region": "eu", "ok": True, "latency_ms": 208.0, "error": None},
        {"provider": "multi", "region": "us", "ok": True, "latency_ms": 2.0, "error": None},
        {"provider": "gone", "region": "default", "ok": False, "latency_ms": 0.4, "error": "refused"},
    ]
    rows = latency_report.histogram_quantiles(
        {"a": METRICS_A, "b": METRICS_B}, ENDPOINTS, ["provider", "region"]
    )
    assert latency_report.latency_flags(probes, rows, [], 150) == [
        "multi/eu: probe 208.0 ms > 150 ms",
        "gone/default: probe failed after 0.4 ms (refused)",
        "multi/eu: traffic p95 242.5 ms > 150 ms (2 attempts)",
    ]
    assert latency_report.latency_flags(probes[:2], rows, [], 1000) == []


def _config(tmp_path: Path, endpoints: list[dict[str, str]]) -> dict[str, Any]:
    config = base_config(f"sqlite:///{tmp_path / 'unused.db'}")
    config["providers"].append(
        {
            "name": "multi",
            "type": "openai_compat",
            "pricing_provider_id": "self_hosted",
            "endpoints": endpoints,
        }
    )
    return config


async def test_probe_endpoints_times_each_endpoint(tmp_path: Path, fake_upstream) -> None:
    upstream, url = fake_upstream
    upstream.mode, upstream.delay = "slow_first_byte", 0.2
    config = _config(tmp_path, [{"region": "eu", "base_url": url}, {"region": "us", "base_url": REFUSED}])
    settings = parse_settings(config, environ=BASE_ENV)
    results = {r["region"]: r for r in as_dicts(await probe_endpoints(settings, 2.0))}
    assert results["eu"]["ok"] and results["eu"]["status"] == 200 and results["eu"]["latency_ms"] >= 200
    assert not results["us"]["ok"] and results["us"]["status"] is None and results["us"]["error"]
    # The probe lists models; it sends no API request.
    assert upstream.model_listings == 1 and upstream.requests == 0


def test_probe_endpoints_command_prints_json(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, [{"region": "us", "base_url": REFUSED}])))
    done = run_cli("probe-endpoints", "--config", str(path), "--json", "--timeout", "2", env=BASE_ENV)
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["provider"] == "multi" and result["region"] == "us" and result["ok"] is False
    assert result["url"] == REFUSED + "/models"


def test_reports_show_urls_without_user_info_or_query() -> None:
    assert shown_url("https://user:pw@eu.example.com:8443/v1?key=abc") == "https://eu.example.com:8443/v1"
    assert shown_url("http://127.0.0.1:9/v1/models") == "http://127.0.0.1:9/v1/models"
