"""health_report.yml's memory section on the shared local deployment: RSS per instance read
from each instance's /metrics, compared with the previous report of the same process (kept
on the controller), growth flagged. Numbers are parsed from the report and checked against
the instances' own /metrics and against the stored samples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.playbooks.conftest import Deployment

pytestmark = pytest.mark.slow

_LINE = re.compile(
    r"memory (?P<name>\w+): rss (?P<mib>[\d.]+) MiB \(rss_bytes=(?P<rss>\d+)\)"
    r"(?: (?P<growth_mib>[+-][\d.]+) MiB \(growth_bytes=(?P<growth>-?\d+)\)"
    r" since the report of (?P<ago>\d+) s ago"
    r"(?P<growing> GROWING)?| \(first report of this process\))"
)


def _memory(output: str) -> dict[str, dict[str, str | None]]:
    """The report's memory lines, unwrapped (the YAML callback folds long lines)."""
    flat = re.sub(r"\s+", " ", output)
    return {m["name"]: m.groupdict() for m in _LINE.finditer(flat)}


def _sample(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_health_report_shows_rss_per_instance_and_flags_growth(
    local_deployment: Deployment, tmp_path: Path
) -> None:
    state = tmp_path / "health-report.json"
    first = local_deployment.ok("health_report.yml", health_report_state=str(state))
    assert first.recap["changed"] == 0
    memory = _memory(first.output)
    assert set(memory) == {i["name"] for i in local_deployment.instances}, first.output[-3000:]
    stored = json.loads(state.read_text())
    for instance in local_deployment.instances:
        line = memory[instance["name"]]
        rss = int(line["rss"])
        # A real process: tens of MiB, and what its /metrics says now (within what a few seconds change).
        assert 20 * 2**20 < rss < 2 * 2**30
        assert abs(rss - _sample(instance["port"], "gateway_process_resident_memory_bytes")) < 0.3 * rss
        assert line["growth"] is None  # first report of this process
        assert stored[instance["name"]]["rss"] == rss
        assert stored[instance["name"]]["started"] == _sample(
            instance["port"], "gateway_process_start_time_seconds"
        )

    # An hour ago instance a was 64 MiB smaller (same process): flagged; b grew little: not flagged.
    a, b = (i["name"] for i in local_deployment.instances)
    stored[a]["rss"] -= 64 * 2**20
    stored[a]["at"] -= 3600
    state.write_text(json.dumps(stored))
    second = local_deployment.ok("health_report.yml", health_report_state=str(state))
    memory = _memory(second.output)
    grown = memory[a]
    assert int(grown["growth"]) == int(grown["rss"]) - stored[a]["rss"]
    assert int(grown["growth"]) > 48 * 2**20 and grown["growing"] == " GROWING"
    assert 3600 <= int(grown["ago"]) < 3600 + 600
    assert "restart drained (restart.yml) if it keeps growing" in re.sub(r"\s+", " ", second.output)
    steady = memory[b]
    assert int(steady["growth"]) == int(steady["rss"]) - stored[b]["rss"]
    assert abs(int(steady["growth"])) < 16 * 2**20 and steady["growing"] is None

    # Another process (restarted since): no comparison, so no false alarm.
    stored = json.loads(state.read_text())
    stored[a]["started"] -= 1000
    stored[a]["rss"] = 1
    state.write_text(json.dumps(stored))
    third = local_deployment.ok("health_report.yml", health_report_state=str(state))
    assert _memory(third.output)[a]["growth"] is None
