"""restart.yml on the shared local deployment: every instance restarted (a new process), one at a
time, drained: no request fails under load, and the release stays the same."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.playbooks.conftest import RELEASE_V1, Deployment
from tests.playbooks.loadgen import LoadGenerator

pytestmark = pytest.mark.slow


def _process_start_times(deployment: Deployment) -> dict[str, float]:
    started = {}
    for instance in deployment.instances:
        metrics = httpx.get(f"http://127.0.0.1:{instance['port']}/metrics", timeout=5).text
        started[instance["name"]] = float(
            re.search(r"^gateway_process_start_time_seconds (\S+)$", metrics, re.M).group(1)
        )
    return started


def test_rolling_restart_under_load_fails_no_request(local_deployment: Deployment) -> None:
    before = _process_start_times(local_deployment)
    key = local_deployment.secrets()["GATEWAY_SEED_KEY"]
    local_deployment.wait_in_rotation()
    with LoadGenerator(local_deployment.url, key) as load:
        result = local_deployment.ok("restart.yml")
    print(f"\nrolling restart: sent={load.sent} failed={load.failed}")
    assert f"Restarted every instance of {RELEASE_V1}, one at a time." in result.output
    assert load.sent > 50
    assert load.failed == 0, (dict(load.failures), local_deployment.lb_events())
    after = _process_start_times(local_deployment)
    assert all(after[name] > before[name] for name in before), (before, after)
    for instance in local_deployment.instances:
        ready = httpx.get(f"http://127.0.0.1:{instance['port']}/readyz", timeout=5).json()
        assert ready["version"] == RELEASE_V1
