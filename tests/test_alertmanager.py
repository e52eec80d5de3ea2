"""The Alertmanager config: valid, routes the runbook's alert response matrix, and a real
Alertmanager delivers an alert with its runbook to the receiver's webhook."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.processes import Process, free_port, wait_http, wait_until

ALERTS = Path(__file__).resolve().parents[1] / "gateway_app" / "alerts"
CONFIG = ALERTS / "alertmanager.yml"
RULES = [r for g in yaml.safe_load((ALERTS / "rules.yml").read_text())["groups"] for r in g["rules"]]

# The seed's alert response matrix: alert -> (receiver, response time as repeat_interval).
RESPONSE_MATRIX = {
    "GatewayProviderDown": ("oncall-pager", "5m"),
    "GatewayHighErrorRate": ("oncall-pager", "15m"),
    "GatewayDatabasePoolExhausted": ("oncall-pager", "10m"),
    "GatewayMemoryHigh": ("oncall-chat", "30m"),
    "GatewayDiskHigh": ("oncall-chat", "1h"),
    "GatewayCertificateExpiring": ("oncall-ticket", "24h"),
}
# Severity -> receiver for the alerts the matrix does not name.
RECEIVER_BY_SEVERITY = {
    "critical": "oncall-pager",
    "high": "oncall-pager",
    "medium": "oncall-chat",
    "low": "oncall-ticket",
}


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)


def routed_receiver(labels: dict[str, str]) -> str:
    done = amtool(
        "config", "routes", "test", f"--config.file={CONFIG}", *(f"{k}={v}" for k, v in labels.items())
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def _matches(matcher: str, labels: dict[str, str]) -> bool:
    name, op, value = re.fullmatch(r'(\w+)(=~|!=|=)"(.*)"', matcher).groups()
    actual = labels.get(name, "")
    if op == "=~":
        return re.fullmatch(value, actual) is not None
    return (actual == value) == (op == "=")


def repeat_interval(labels: dict[str, str]) -> str:
    """The repeat_interval of the first child route whose matchers all match (no nesting here)."""
    route = yaml.safe_load(CONFIG.read_text())["route"]
    for child in route["routes"]:
        if all(_matches(m, labels) for m in child["matchers"]):
            return child.get("repeat_interval", route["repeat_interval"])
    return route["repeat_interval"]


def test_config_is_valid_for_amtool() -> None:
    checked = amtool("check-config", str(CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_every_alert_routes_by_the_response_matrix(rule: dict) -> None:
    labels = {"alertname": rule["alert"], **rule["labels"]}
    receiver, response = RESPONSE_MATRIX.get(
        rule["alert"], (RECEIVER_BY_SEVERITY[rule["labels"]["severity"]], None)
    )
    assert routed_receiver(labels) == receiver
    if response is not None:
        assert repeat_interval(labels) == response


class _Webhook(BaseHTTPRequestHandler):
    received: list[tuple[str, dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list]]:
    received: list[tuple[str, dict]] = []
    handler = type("Webhook", (_Webhook,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def test_real_alertmanager_pages_with_the_runbook(tmp_path: Path, webhook: tuple[str, list]) -> None:
    base, received = webhook
    # The shipped config with only the receivers' placeholder host pointed at the local webhook.
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.read_text().replace("http://alert-webhook.invalid", base))
    port = free_port()
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "prometheus-alertmanager is not installed (scripts install it: see .ci/run)"
    proc = Process(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        tmp_path / "alertmanager.log",
    )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{port}/api/v2"
        wait_http(f"{api}/status", proc=proc.proc)
        rule = next(r for r in RULES if r["alert"] == "GatewayProviderDown")
        now = datetime.now(UTC)
        alert = {
            "labels": {"alertname": rule["alert"], **rule["labels"], "provider": "openai"},
            "annotations": {k: v for k, v in rule["annotations"].items() if "{{" not in v},
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=5)).isoformat(),
        }
        assert httpx.post(f"{api}/alerts", json=[alert], timeout=5).status_code == 200
        # Critical alerts wait group_wait (10 s) before the first page.
        path, payload = wait_until(lambda: received and received[0], timeout=30)
        assert path == "/pager"
        assert payload["receiver"] == "oncall-pager"
        [sent] = payload["alerts"]
        assert sent["labels"]["alertname"] == "GatewayProviderDown"
        assert sent["annotations"]["playbook"] == "playbooks/provider_auth_check.yml"
    finally:
        proc.stop()
