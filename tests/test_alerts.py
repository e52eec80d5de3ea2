"""The alert rules: valid for Prometheus, and each alert fires (or not) as its promtool tests say."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ALERTS = Path(__file__).resolve().parents[1] / "gateway_app" / "alerts"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=ALERTS, timeout=60)


def test_rules_file_is_valid() -> None:
    checked = promtool("check", "rules", "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rules_unit_tests_pass() -> None:
    tested = promtool("test", "rules", "tests.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_names_an_existing_playbook_and_a_severity() -> None:
    rules = [r for g in yaml.safe_load((ALERTS / "rules.yml").read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    for rule in rules:
        playbook = ALERTS.parents[1] / rule["annotations"]["playbook"]
        assert playbook.suffix == ".yml" and playbook.is_file(), f"{rule['alert']}: no playbook {playbook}"
        assert rule["labels"]["severity"] in {"critical", "high", "medium", "low"}, rule["alert"]


def test_the_runbook_alert_matrix_is_covered() -> None:
    tested = (ALERTS / "tests.yml").read_text()
    for alert in (
        "GatewayHighErrorRate",
        "GatewayProviderDown",
        "GatewayDatabasePoolExhausted",
        "GatewayUpstreamPoolExhausted",
        "GatewayHighLatency",
        "GatewayMemoryHigh",
        "GatewayDiskHigh",
    ):
        assert f"alertname: {alert}" in tested, f"{alert} has no promtool test"
