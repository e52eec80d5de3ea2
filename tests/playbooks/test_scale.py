"""scale.yml on the shared local deployment (hosts target): from 2 instances to 3 and back
under continuous load, as an operator runs it after editing the inventory's instance list.
No request fails, the new instance serves before the scale-down, the supervised programs
and haproxy's servers follow the list, no other instance restarts, a rerun changes nothing
and `--check --diff` changes nothing."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.playbooks.conftest import Deployment
from tests.playbooks.loadgen import LoadGenerator
from tests.support.processes import free_port

pytestmark = pytest.mark.slow


def _supervised(deployment: Deployment) -> dict[str, str]:
    """gateway-* program -> state, as supervisorctl reports it."""
    done = deployment.supervisorctl("status")
    return {
        line.split()[0]: line.split()[1] for line in done.stdout.splitlines() if line.startswith("gateway-")
    }


def _configured_servers(deployment: Deployment) -> list[str]:
    text = (deployment.root / "etc" / "haproxy.cfg").read_text()
    return re.findall(r"^\s+server (\S+) ", text, re.M)


def _metrics(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def _start_time(port: int) -> float:
    return float(re.search(r"^gateway_process_start_time_seconds (\S+)$", _metrics(port), re.M).group(1))


def _chat_served(port: int) -> float:
    return sum(
        float(value)
        for value in re.findall(
            r'^gateway_requests_total\{[^}]*operation="chat"[^}]*\} (\S+)$', _metrics(port), re.M
        )
    )


def _scale_report(output: str) -> dict:
    """scale.yml's report lines `scale <field>: <json>` (before, added, removed, after)."""
    return {key: json.loads(value) for key, value in re.findall(r"^\s+- 'scale (\w+): (.*)'$", output, re.M)}


def test_scale_up_then_down_under_load_fails_no_request(local_deployment: Deployment) -> None:
    base = local_deployment.instances
    third = {"name": "c", "port": free_port()}
    before = {i["name"]: _start_time(i["port"]) for i in base}
    key = local_deployment.secrets()["GATEWAY_SEED_KEY"]

    local_deployment.wait_in_rotation()
    with LoadGenerator(local_deployment.url, key) as load:
        up = local_deployment.ok("scale.yml", gateway_instances=[*base, third])
        sent_at_up = load.sent
        # The new instance gets its share of the load before it leaves again.
        deadline = time.monotonic() + 60
        while _chat_served(third["port"]) < 10 and time.monotonic() < deadline:
            time.sleep(0.5)
        served_by_c = _chat_served(third["port"])
        supervised_up, lb_up, configured_up = (
            _supervised(local_deployment),
            local_deployment.lb_servers(),
            _configured_servers(local_deployment),
        )
        down = local_deployment.ok("scale.yml", gateway_instances=base)

    print(
        f"\nscale 2->3->2: sent={load.sent} failed={load.failed} "
        f"(sent during scale-up run: {sent_at_up}, served by c: {served_by_c:.0f})"
    )
    assert load.sent > 50
    assert load.failed == 0, (dict(load.failures), local_deployment.lb_events())

    assert _scale_report(up.output) == {
        "before": ["a", "b"],
        "added": ["c"],
        "removed": [],
        "after": ["a", "b", "c"],
    }
    assert supervised_up == {"gateway-a": "RUNNING", "gateway-b": "RUNNING", "gateway-c": "RUNNING"}
    assert lb_up == {"a": "UP", "b": "UP", "c": "UP"}
    assert configured_up == ["a", "b", "c"]
    assert served_by_c >= 10

    assert _scale_report(down.output) == {
        "before": ["a", "b", "c"],
        "added": [],
        "removed": ["c"],
        "after": ["a", "b"],
    }
    assert _supervised(local_deployment) == {"gateway-a": "RUNNING", "gateway-b": "RUNNING"}
    assert local_deployment.lb_servers() == {"a": "UP", "b": "UP"}
    assert _configured_servers(local_deployment) == ["a", "b"]
    assert not (local_deployment.root / "etc" / "instances" / "c.yaml").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{third['port']}/healthz", timeout=5)

    # Neither scale restarted the instances that stayed.
    assert {i["name"]: _start_time(i["port"]) for i in base} == before


def test_scale_is_idempotent_and_check_mode_changes_nothing(local_deployment: Deployment) -> None:
    base = local_deployment.instances
    again = local_deployment.ok("scale.yml", gateway_instances=base)
    assert again.recap["changed"] == 0, again.output[-3000:]

    fourth = {"name": "d", "port": free_port()}
    checked = local_deployment.ok("scale.yml", "--check", "--diff", gateway_instances=[*base, fourth])
    assert _scale_report(checked.output)["added"] == ["d"]
    assert "+    server d 127.0.0.1:" in checked.output  # the haproxy.cfg diff it would write
    assert _supervised(local_deployment) == {"gateway-a": "RUNNING", "gateway-b": "RUNNING"}
    assert local_deployment.lb_servers() == {"a": "UP", "b": "UP"}
    assert _configured_servers(local_deployment) == ["a", "b"]


def test_hpa_bounds_are_refused_on_hosts(local_deployment: Deployment) -> None:
    refused = local_deployment.run("scale.yml", scale_min_replicas=3)
    assert refused.rc != 0
    assert "This target has no autoscaler: list the instances in gateway_instances" in refused.output


def test_incident_error_rate_adds_capacity_through_the_scale_steps(local_deployment: Deployment) -> None:
    base = local_deployment.instances
    third = {"name": "c", "port": free_port()}
    try:
        result = local_deployment.ok("incident_error_rate.yml", scale=True, gateway_instances=[*base, third])
        assert _scale_report(result.output)["added"] == ["c"]
        assert local_deployment.lb_servers() == {"a": "UP", "b": "UP", "c": "UP"}
        assert _chat_served(third["port"]) >= 0  # its /metrics answer: it runs
    finally:
        local_deployment.ok("scale.yml", gateway_instances=base)
    assert local_deployment.lb_servers() == {"a": "UP", "b": "UP"}
