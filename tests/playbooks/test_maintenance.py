"""Maintenance notifications, the health check before a maintenance, the upgrade's
restore-only-when-breaking rescue, and the log-first runbooks, on one own
deployment (SQLite, two instances, an OTLP endpoint nobody listens on).

A tiny HTTP server started by the test is the maintenance webhook: it records
every post (headers and JSON body). The tests run in order on the deployment.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.playbooks.conftest import (
    ADDITIVE_TABLE,
    BREAKING_TABLE,
    RELEASE_BROKEN,
    RELEASE_BROKEN_ADDITIVE,
    RELEASE_V1,
    RELEASE_V2,
    Deployment,
    PlaybookRun,
    instance_versions,
    sqlite_connect,
    sqlite_tables,
)
from tests.support.processes import free_port, refused_port

pytestmark = pytest.mark.slow

SECRET = "whsec-test-7f3a9c"
REASON = "issue 13: maintenance drill"


class RecordingWebhook:
    """POSTs recorded as (headers, JSON body); answers 204."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], dict[str, Any]]] = []
        recorded = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorded.append((dict(self.headers.items()), json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/maintenance"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[tuple[str, str, str, str]]:
        return [(body["event"], body["action"], body["from"], body["to"]) for _, body in self.posts]


class SilentWebhook:
    """A webhook that is down the slow way: it accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hooks/maintenance"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._hold, daemon=True).start()

    def _hold(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # kept open, never read, never answered


@pytest.fixture(scope="module")
def webhook() -> Iterator[RecordingWebhook]:
    hook = RecordingWebhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def deployment(deployment_factory: Any) -> Iterator[Deployment]:
    # No collector listens there: every instance logs that it is unreachable at startup.
    with refused_port() as collector_port:
        deployed = deployment_factory(gateway_otel_endpoint=f"http://127.0.0.1:{collector_port}")
        # A failed upgrade with a restore runs two rolling restarts and two rounds of checks:
        # on a loaded machine that took more than the default 10 minutes.
        deployed.run_timeout = 1800
        deployed.ok("deploy.yml", gateway_wheel=str(deployed.releases.wheels[RELEASE_V1]))
        yield deployed


def _notify(webhook: RecordingWebhook) -> dict[str, Any]:
    return {
        "maintenance_webhook_url": webhook.url,
        "maintenance_webhook_secret": SECRET,
        "maintenance_reason": REASON,
    }


def _key_names(deployment: Deployment) -> set[str]:
    with sqlite_connect(deployment) as db:
        return {row[0] for row in db.execute("SELECT name FROM api_keys")}


def _schema_version(deployment: Deployment) -> int:
    with sqlite_connect(deployment) as db:
        return db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]


def _upgrade_with_a_write_after_the_backup(
    deployment: Deployment, webhook: RecordingWebhook, release: str, key_name: str
) -> PlaybookRun:
    """Run upgrade.yml to a release that never gets ready; as soon as its pre-upgrade backup is
    written, create a key (a write made after the backup, while the upgrade is still running)."""
    pattern = f"pre-upgrade-{RELEASE_V1}-to-{release}-*.json"
    before = set((deployment.root / "backups").glob(pattern))
    with ThreadPoolExecutor(1) as pool:
        wheel = str(deployment.releases.wheels[release])
        # The never-ready instance is waited on for 30 s: time for the write to land
        # before the rescue runs, however loaded the machine is.
        running: Future[PlaybookRun] = pool.submit(
            deployment.run, "upgrade.yml", gateway_wheel=wheel, gateway_ready_timeout=30, **_notify(webhook)
        )
        deadline = time.monotonic() + 900
        while not set((deployment.root / "backups").glob(pattern)) - before:
            assert not running.done(), running.result().output[-4000:]
            assert time.monotonic() < deadline, "no pre-upgrade backup appeared"
            time.sleep(0.2)
        created = deployment.gateway("keys", "create", "--service-account", "drill", "--name", key_name)
        assert created.returncode == 0, created.stderr
        # The write landed while the upgrade was running (it waits for the never-ready release).
        assert not running.done()
        return running.result(timeout=deployment.run_timeout)


def _flat(output: str) -> str:
    """The output with the YAML callback's line wrapping undone."""
    return " ".join(output.split())


def test_otlp_check_shows_the_gateway_logs_first(deployment: Deployment) -> None:
    out = _flat(deployment.ok("otlp_check.yml", otlp_allow_missing=True).output)
    logs_at = out.index("TASK [Show the gateway's recent logs]")
    first_check = out.index("TASK [Read the active config]")
    # The lines each instance wrote at startup, shown before anything else is checked.
    assert '"msg":"OTLP collector unreachable; traces are dropped' in out[logs_at:first_check]
    assert f'"msg":"gateway starting","version":"{RELEASE_V1}"' in out[logs_at:first_check]


def test_migration_recovery_shows_the_gateway_logs_first(deployment: Deployment) -> None:
    out = _flat(deployment.ok("migration_recovery.yml").output)
    logs_at = out.index("TASK [Show the gateway's recent logs]")
    check_at = out.index("Run the explicit migrate check with the current release")
    assert f'"msg":"gateway starting","version":"{RELEASE_V1}"' in out[logs_at:check_at]
    assert "Nothing to recover: schema is current" in out


def test_upgrade_posts_starting_then_finished(deployment: Deployment, webhook: RecordingWebhook) -> None:
    webhook.posts.clear()
    result = deployment.ok(
        "upgrade.yml", gateway_wheel=str(deployment.releases.wheels[RELEASE_V2]), **_notify(webhook)
    )
    assert webhook.events() == [
        ("starting", "upgrade", RELEASE_V1, RELEASE_V2),
        ("finished", "upgrade", RELEASE_V1, RELEASE_V2),
    ]
    for headers, body in webhook.posts:
        assert headers["X-Webhook-Secret"] == SECRET
        assert body["reason"] == REASON and body["target"] == "hosts" and body["host"] == "local"
    starting, finished = (body for _, body in webhook.posts)
    assert starting["duration_seconds"] is None
    assert float(finished["duration_seconds"]) > 0
    assert finished["backup"].startswith(f"pre-upgrade-{RELEASE_V1}-to-{RELEASE_V2}-")
    assert "healthy" in result.output and "delivered (HTTP 204)" in _flat(result.output)
    assert SECRET not in result.output
    assert instance_versions(deployment) == {RELEASE_V2}


def test_rollback_posts_starting_then_finished(deployment: Deployment, webhook: RecordingWebhook) -> None:
    webhook.posts.clear()
    backup = next((deployment.root / "backups").glob(f"pre-upgrade-{RELEASE_V1}-to-{RELEASE_V2}-*.json")).stem
    result = deployment.ok("rollback.yml", rollback_to=RELEASE_V1, restore_backup=backup, **_notify(webhook))
    assert webhook.events() == [
        ("starting", "rollback", RELEASE_V2, RELEASE_V1),
        ("finished", "rollback", RELEASE_V2, RELEASE_V1),
    ]
    assert all(body["backup"] == backup and body["reason"] == REASON for _, body in webhook.posts)
    assert SECRET not in result.output
    assert instance_versions(deployment) == {RELEASE_V1}
    assert BREAKING_TABLE not in sqlite_tables(deployment)


def test_failed_breaking_upgrade_restores_the_backup(
    deployment: Deployment, webhook: RecordingWebhook
) -> None:
    webhook.posts.clear()
    result = _upgrade_with_a_write_after_the_backup(
        deployment, webhook, RELEASE_BROKEN, "after-backup-breaking"
    )
    assert result.rc != 0
    out = _flat(result.output)
    assert f"Upgrade {RELEASE_V1} -> {RELEASE_BROKEN} FAILED and was rolled back to {RELEASE_V1}" in out
    # The migrate command's output comes first, before the instance logs and the revert.
    shown = out.index("TASK [Show the migrate command's output first]")
    assert "applied 0003_runbook_test" in out[shown : out.index("TASK [Read the instance logs]")]
    assert f"Release {RELEASE_V1} refuses the migrated schema (a breaking migration ran)" in out
    assert "The migration was breaking" in out and "was restored" in out
    # The schema is back as the backup had it, and so is everything else: the key written
    # after the backup is gone (the price of a restore, paid only for a breaking migration).
    assert BREAKING_TABLE not in sqlite_tables(deployment)
    assert _schema_version(deployment) == 2
    assert "after-backup-breaking" not in _key_names(deployment)
    assert instance_versions(deployment) == {RELEASE_V1}
    assert [event for event, *_ in webhook.events()] == ["starting", "failed"]
    failed = webhook.posts[-1][1]
    assert failed["from"] == RELEASE_V1 and failed["to"] == RELEASE_BROKEN
    assert "with the pre-upgrade backup restored" in failed["detail"]
    assert float(failed["duration_seconds"]) > 0


def test_failed_additive_upgrade_keeps_the_database(
    deployment: Deployment, webhook: RecordingWebhook
) -> None:
    webhook.posts.clear()
    result = _upgrade_with_a_write_after_the_backup(
        deployment, webhook, RELEASE_BROKEN_ADDITIVE, "after-backup-additive"
    )
    assert result.rc != 0
    out = _flat(result.output)
    failed = f"Upgrade {RELEASE_V1} -> {RELEASE_BROKEN_ADDITIVE} FAILED and was rolled back to {RELEASE_V1}"
    assert failed in out
    assert "applied 0003_runbook_additive" in out
    assert f"Release {RELEASE_V1} runs on the schema as it is" in out
    assert "The migration was additive" in out and "was not restored" in out
    # No restore: the row written after the backup is still there, and so is the additive table.
    assert "after-backup-additive" in _key_names(deployment)
    assert ADDITIVE_TABLE in sqlite_tables(deployment)
    assert instance_versions(deployment) == {RELEASE_V1}
    key = deployment.secrets()["GATEWAY_SEED_KEY"]
    models = httpx.get(f"{deployment.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
    assert models.status_code == 200
    assert [event for event, *_ in webhook.events()] == ["starting", "failed"]
    assert "pre-upgrade backup restored" not in webhook.posts[-1][1]["detail"]


def test_restore_posts_starting_then_finished(deployment: Deployment, webhook: RecordingWebhook) -> None:
    webhook.posts.clear()
    backup = next(
        (deployment.root / "backups").glob(f"pre-upgrade-{RELEASE_V1}-to-{RELEASE_BROKEN_ADDITIVE}-*.json")
    ).stem
    result = deployment.ok("restore.yml", restore_backup=backup, **_notify(webhook))
    assert webhook.events() == [
        ("starting", "restore", RELEASE_V1, RELEASE_V1),
        ("finished", "restore", RELEASE_V1, RELEASE_V1),
    ]
    assert all(body["backup"] == backup for _, body in webhook.posts)
    assert SECRET not in result.output
    # The backup was taken before the additive migration and before the key.
    assert ADDITIVE_TABLE not in sqlite_tables(deployment)
    assert "after-backup-additive" not in _key_names(deployment)
    assert instance_versions(deployment) == {RELEASE_V1}


def test_a_webhook_that_never_answers_does_not_block_the_restore(deployment: Deployment) -> None:
    silent = SilentWebhook()
    backup = next(
        (deployment.root / "backups").glob(f"pre-upgrade-{RELEASE_V1}-to-{RELEASE_BROKEN_ADDITIVE}-*.json")
    ).stem
    try:
        result = deployment.ok(
            "restore.yml",
            restore_backup=backup,
            maintenance_webhook_url=silent.url,
            maintenance_webhook_timeout=2,
            maintenance_reason=REASON,
        )
    finally:
        silent.sock.close()
    # Both posts were attempted (the connections were made), neither was answered,
    # each gave up after its timeout, and the restore went on and succeeded.
    assert len(silent.held) == 2
    out = _flat(result.output)
    for event in ("starting", "finished"):
        assert f"did not take the {event} notification within 2 s" in out
    assert "checksum and row counts match its manifest" in out
    assert instance_versions(deployment) == {RELEASE_V1}


def test_upgrade_refuses_an_unhealthy_gateway(deployment: Deployment, webhook: RecordingWebhook) -> None:
    webhook.posts.clear()
    backups = set((deployment.root / "backups").iterdir())
    stopped = deployment.instances[1]
    deployment.supervisorctl("stop", f"gateway-{stopped['name']}", timeout=120)
    try:
        refused = deployment.run(
            "upgrade.yml", gateway_wheel=str(deployment.releases.wheels[RELEASE_V2]), **_notify(webhook)
        )
        assert refused.rc != 0
        out = _flat(refused.output)
        assert "Refused: the gateway is not healthy" in out and "Nothing was changed" in out
        url = f"http://127.0.0.1:{stopped['port']}/readyz"
        assert f"- {stopped['name']} is not ready: no answer from {url}" in out
        assert "rerun with -e maintenance_refuse_unhealthy=false" in out
        assert webhook.posts == []  # nothing started, nothing to announce
        assert set((deployment.root / "backups").iterdir()) == backups
        assert (deployment.root / "current").readlink().name == RELEASE_V1
        # The override lets it through (here to the current release, which then stops: nothing to do).
        forced = deployment.ok("upgrade.yml", gateway_version=RELEASE_V1, maintenance_refuse_unhealthy=False)
        assert f"UNHEALTHY: {stopped['name']} is not ready" in _flat(forced.output)
    finally:
        deployment.supervisorctl("start", f"gateway-{stopped['name']}", timeout=120)


def test_upgrade_refuses_an_elevated_error_rate(deployment: Deployment) -> None:
    """5xx answers in the window: the provider is disabled, so every chat fails."""
    deployment.ok("incident_error_rate.yml", disable_provider="echo")
    key = deployment.secrets()["GATEWAY_SEED_KEY"]
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "x"}]}
    try:
        deadline = time.monotonic() + 30
        failed = 0
        while failed < 6 and time.monotonic() < deadline:
            answer = httpx.post(
                f"{deployment.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            failed += answer.status_code >= 500
        assert failed >= 6
        time.sleep(2)  # the request-log writer flushes off the hot path
        refused = deployment.run("upgrade.yml", gateway_wheel=str(deployment.releases.wheels[RELEASE_V2]))
        assert refused.rc != 0
        out = _flat(refused.output)
        assert "- error rate already elevated:" in out and "answered 5xx" in out
        assert (deployment.root / "current").readlink().name == RELEASE_V1
    finally:
        deployment.ok("incident_error_rate.yml", enable_provider="echo")


def test_docs_show_the_commands_of_these_tests() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
    for page in ("upgrade.md", "rollback.md", "restore.md"):
        text = (docs / page).read_text()
        for variable in ("maintenance_webhook_url", "maintenance_webhook_secret", "maintenance_reason"):
            assert variable in text, f"{page} does not document {variable}"
        assert "maintenance_refuse_unhealthy" in text, page
    for page in ("migration_recovery.md", "otlp_check.md"):
        assert "logs" in (docs / page).read_text()
