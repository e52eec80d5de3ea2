"""The alert rules: valid for Prometheus, and each alert fires (or not) as its promtool tests say."""

from __future__ import annotations

import re
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


def _playbook_annotations(node: object) -> list[str]:
    """Every value of a ``playbook`` key anywhere in a parsed YAML tree (rules, promtool tests, routes)."""
    if isinstance(node, dict):
        found = [node["playbook"]] if isinstance(node.get("playbook"), str) else []
        return found + [p for value in node.values() for p in _playbook_annotations(value)]
    if isinstance(node, list):
        return [p for item in node for p in _playbook_annotations(item)]
    return []


def test_every_alert_names_an_existing_playbook_and_a_severity() -> None:
    rules = [r for g in yaml.safe_load((ALERTS / "rules.yml").read_text())["groups"] for r in g["rules"]]
    assert len(rules) >= 8
    for rule in rules:
        assert "playbook" in rule["annotations"], f"{rule['alert']} names no playbook"
        assert rule["labels"]["severity"] in {"critical", "high", "medium", "low"}, rule["alert"]


def test_every_playbook_an_alert_file_names_exists_with_its_runbook() -> None:
    """rules.yml, tests.yml and alertmanager.yml: each playbook named (annotation or text) is a real
    playbook in playbooks/ and has its docs/runbooks/<name>.md, as the notifications promise."""
    repo = ALERTS.parents[1]
    named: dict[str, set[str]] = {}
    for source in sorted(ALERTS.glob("*.yml")):
        text = source.read_text()
        refs = set(_playbook_annotations(yaml.safe_load(text)))
        refs |= set(re.findall(r"playbooks/[A-Za-z0-9_.-]+\.ya?ml", text))
        for ref in refs:
            named.setdefault(ref, set()).add(source.name)
    rules = yaml.safe_load((ALERTS / "rules.yml").read_text())["groups"]
    assert {r["annotations"]["playbook"] for g in rules for r in g["rules"]} <= set(named)
    assert len(named) >= 5, named
    for ref, sources in sorted(named.items()):
        playbook = repo / ref
        assert ref.startswith("playbooks/") and playbook.suffix == ".yml", f"{ref} (named in {sources})"
        assert playbook.is_file(), f"{ref} (named in {sorted(sources)}) is not a playbook in playbooks/"
        assert playbook.parent == repo / "playbooks", f"{ref}: not a top-level playbook"
        assert isinstance(yaml.safe_load(playbook.read_text()), list), f"{ref}: not a list of plays"
        runbook = repo / "docs" / "runbooks" / f"{playbook.stem}.md"
        assert runbook.is_file(), f"{ref} (named in {sorted(sources)}) has no {runbook.relative_to(repo)}"


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
