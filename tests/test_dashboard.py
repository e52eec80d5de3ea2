"""The Grafana dashboard: valid JSON, every PromQL expression parses (promtool), and every metric it
names is one a real gateway serves on /metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import yaml
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SEED_KEY, Launcher, base_config

DASHBOARD = Path(__file__).resolve().parents[1] / "gateway_app" / "dashboards" / "gateway.json"
# Grafana's variables, replaced by what they expand to so promtool sees plain PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$instance": ".*"}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    found = [(f"{p['title']}/{t['refId']}", t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"variable {variable['name']}", variable["query"]["query"]))
    return found


def promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    # label_values(metric, label) is Grafana's, not PromQL: the metric is what must exist.
    return re.sub(r"label_values\((\w+), \w+\)", r"\1", expr)


def test_dashboard_is_valid_json_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "llm-gateway"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and len(ids) >= 12
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_expression_parses(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": promql(expr)}
                    for i, (_, expr) in enumerate(expressions())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def served_metric_names(text: str) -> set[str]:
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        # A family with no samples yet (no priced usage, say) still declares its names.
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def test_every_metric_the_dashboard_names_is_served(launcher: Launcher, databases) -> None:
    gateway = launcher.gateway(base_config(databases.new("sqlite")))
    client = OpenAI(base_url=gateway.url + "/v1", api_key=SEED_KEY)
    client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}])
    for _ in client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        pass
    served = served_metric_names(httpx.get(gateway.url + "/metrics", timeout=5).text)
    for where, expr in expressions():
        for name in re.findall(r"\bgateway_\w+", promql(expr)):
            assert name in served, f"{where}: {name} is not on /metrics"
