"""The day-2 runbooks on the shared local deployment (SQLite), each checked on the real outcome.

migration_recovery runs last here: it recreates the database.
"""

from __future__ import annotations

import re
import time
from contextlib import closing

import httpx
import pytest

from tests.playbooks.conftest import Deployment, sqlite_connect

pytestmark = pytest.mark.slow


def _chat(deployment: Deployment, key: str) -> httpx.Response:
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "runbook test"}]}
    return httpx.post(
        f"{deployment.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def _admin_login(deployment: Deployment, password: str) -> int:
    answer = httpx.post(
        f"{deployment.url}/admin/api/session",
        json={"email": "admin@localhost", "password": password},
        timeout=5,
    )
    return answer.status_code


def test_admin_login_check_walks_the_checks(local_deployment: Deployment) -> None:
    result = local_deployment.ok("admin_login_check.yml")
    assert "Admin login works: admin@localhost" in result.output
    assert "1. Assert /admin serves the login page" in result.output
    assert "bootstrap admin admin@localhost: already present" in result.output


def test_admin_login_check_names_each_failure(local_deployment: Deployment) -> None:
    password = local_deployment.secrets()["GATEWAY_BOOTSTRAP_ADMIN_PASSWORD"]

    # Bootstrap disabled in the active config (the instance config on the host, edited by hand).
    instance = local_deployment.root / "etc" / "instances" / "a.yaml"
    config = instance.read_text()
    assert config.count("enabled: true") >= 1
    disabled = config.replace("bootstrap_admin:\n    enabled: true", "bootstrap_admin:\n    enabled: false")
    assert disabled != config
    instance.write_text(disabled)
    try:
        off = local_deployment.run("admin_login_check.yml")
    finally:
        instance.write_text(config)
    assert off.rc != 0 and "auth.bootstrap_admin.enabled is false in the active config" in off.output

    # Wrong password: changed through the admin API, so the stored one is stale.
    login = httpx.post(
        f"{local_deployment.url}/admin/api/session",
        json={"email": "admin@localhost", "password": password},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    other = password + "-changed-elsewhere"
    # The reset runs whatever happens here: the deployment is shared with the worker's next
    # modules, which log in with the stored password.
    try:
        changed = httpx.post(
            f"{local_deployment.url}/admin/api/password",
            json={"current_password": password, "new_password": other},
            headers={"Authorization": f"Bearer {login.json()['token']}"},
            timeout=60,  # two argon2 hashes, on a machine the whole suite loads
        )
        assert changed.status_code == 200, changed.text
        wrong = local_deployment.run("admin_login_check.yml")
    finally:
        reset = local_deployment.gateway("bootstrap-admin", "--reset-password")
        assert reset.returncode == 0, reset.stderr
    assert wrong.rc != 0
    assert "Wrong password: admin@localhost refuses the stored password" in wrong.output
    assert password not in wrong.output and other not in wrong.output
    assert _admin_login(local_deployment, password) == 200

    # Expired session: every session the gateway stores is already expired (a skewed clock).
    with closing(sqlite_connect(local_deployment)) as db, db:
        db.execute(
            "CREATE TRIGGER runbook_expire_sessions AFTER INSERT ON admin_sessions BEGIN "
            "UPDATE admin_sessions SET expires_at = NEW.created_at - 1000 WHERE id = NEW.id; END"
        )
    try:
        expired = local_deployment.run("admin_login_check.yml")
    finally:
        with closing(sqlite_connect(local_deployment)) as db, db:
            db.execute("DROP TRIGGER runbook_expire_sessions")
    assert expired.rc != 0
    assert "Expired session: the session issued at login" in expired.output
    assert "was refused by /admin/api/me (401)" in expired.output
    local_deployment.ok("admin_login_check.yml")


def test_db_maintenance_sqlite_checks_analyzes_and_vacuums(local_deployment: Deployment) -> None:
    path = local_deployment.root / "data" / "gateway.db"
    with closing(sqlite_connect(local_deployment)) as db, db:
        db.execute("CREATE TABLE runbook_scratch (payload BLOB)")
        db.executemany("INSERT INTO runbook_scratch VALUES (?)", [(b"x" * 4000,)] * 300)
    with closing(sqlite_connect(local_deployment)) as db, db:
        db.execute("DROP TABLE runbook_scratch")
    with closing(sqlite_connect(local_deployment)) as db:
        free_before = db.execute("PRAGMA freelist_count").fetchone()[0]
    assert free_before >= 300, free_before
    result = local_deployment.ok("db_maintenance.yml")
    with closing(sqlite_connect(local_deployment)) as db:
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        analyzed = {row[0] for row in db.execute("SELECT tbl FROM sqlite_stat1")}
    assert {"api_keys", "request_logs"} <= analyzed, analyzed
    assert "integrity: ok" in result.output
    # The instances may reuse a few free pages in between; the vacuum leaves none.
    reported = re.search(r"free pages: (\d+) before, 0 after", result.output)
    assert reported and int(reported.group(1)) >= free_before - 50, result.output[-3000:]
    assert path.exists()


def test_health_report_and_provider_checks(local_deployment: Deployment) -> None:
    report = local_deployment.ok("health_report.yml")
    assert "== providers (name, enabled, circuits) ==" in report.output and "- echo" in report.output
    assert "0001_baseline  applied" in report.output
    local_deployment.ok("provider_auth_check.yml", model="echo-1")
    missing = local_deployment.run("provider_auth_check.yml", model="no-such-model")
    assert missing.rc != 0 and "Model 'no-such-model' is not in the active config" in missing.output
    otlp = local_deployment.ok("otlp_check.yml")
    assert "none configured" in otlp.output and "unreachable: []" in otlp.output


def test_ha_check_drill_keeps_serving(local_deployment: Deployment) -> None:
    result = local_deployment.ok("ha_check.yml", ha_drill=True)
    assert "Drill - put the instance back" in result.output
    stat = httpx.get(f"{local_deployment.url}/readyz", timeout=5)
    assert stat.status_code == 200


def test_incident_disable_then_enable_provider(local_deployment: Deployment) -> None:
    key = local_deployment.secrets()["GATEWAY_SEED_KEY"]
    local_deployment.ok("incident_error_rate.yml", disable_provider="echo")
    # Every replica obeys within resilience.state_refresh_seconds (2 s).
    deadline = time.monotonic() + 15
    while _chat(local_deployment, key).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _chat(local_deployment, key).status_code != 200
    result = local_deployment.ok("incident_error_rate.yml", enable_provider="echo", reset_circuit="echo")
    assert "error rate over the last" in result.output
    deadline = time.monotonic() + 15
    while _chat(local_deployment, key).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _chat(local_deployment, key).status_code == 200


def test_rotate_gateway_key_old_key_fails(local_deployment: Deployment) -> None:
    old = local_deployment.secrets()["GATEWAY_SEED_KEY"]
    result = local_deployment.ok("rotate_gateway_key.yml")
    new = local_deployment.secrets()["GATEWAY_SEED_KEY"]
    assert new != old
    assert old not in result.output and new not in result.output
    assert _chat(local_deployment, new).status_code == 200
    assert _chat(local_deployment, old).status_code == 401


def test_rotate_admin_password(local_deployment: Deployment) -> None:
    old = local_deployment.secrets()["GATEWAY_BOOTSTRAP_ADMIN_PASSWORD"]
    result = local_deployment.ok("rotate_admin_password.yml")
    new = local_deployment.secrets()["GATEWAY_BOOTSTRAP_ADMIN_PASSWORD"]
    assert new != old and old not in result.output and new not in result.output
    assert _admin_login(local_deployment, new) == 200
    assert _admin_login(local_deployment, old) == 401


def test_purge_request_logs_counts_and_keeps_the_ledger(local_deployment: Deployment) -> None:
    key = local_deployment.secrets()["GATEWAY_SEED_KEY"]
    with sqlite_connect(local_deployment) as db:
        before = db.execute("SELECT count(*) FROM request_logs").fetchone()[0]
    for _ in range(6):
        assert _chat(local_deployment, key).status_code == 200
    # The request-log writer flushes off the hot path: wait until the six rows are there.
    deadline = time.monotonic() + 60
    while True:
        with sqlite_connect(local_deployment) as db:
            if db.execute("SELECT count(*) FROM request_logs").fetchone()[0] >= before + 6:
                break
        assert time.monotonic() < deadline, "the six request logs were not written within 60 s"
        time.sleep(0.1)
    four_days_ms = 4 * 86_400_000
    with sqlite_connect(local_deployment) as db:
        db.execute(
            "UPDATE request_logs SET created_at = created_at - ? WHERE id IN "
            "(SELECT id FROM request_logs ORDER BY id DESC LIMIT 4)",
            (four_days_ms,),
        )
        old_logs = db.execute(
            "SELECT count(*) FROM request_logs WHERE created_at < ?",
            (int(time.time() * 1000) - 3 * 86_400_000,),
        ).fetchone()[0]
        total_logs = db.execute("SELECT count(*) FROM request_logs").fetchone()[0]
        ledger = db.execute("SELECT count(*) FROM usage_cost_events").fetchone()[0]
    preview = local_deployment.ok("purge_request_logs.yml", retention="3d", purge_apply=False)
    assert f"request_logs: {old_logs}" in preview.output
    with sqlite_connect(local_deployment) as db:
        assert db.execute("SELECT count(*) FROM request_logs").fetchone()[0] >= total_logs
    local_deployment.ok("purge_request_logs.yml", retention="3d")
    with sqlite_connect(local_deployment) as db:
        assert (
            db.execute(
                "SELECT count(*) FROM request_logs WHERE created_at < ?",
                (int(time.time() * 1000) - 3 * 86_400_000,),
            ).fetchone()[0]
            == 0
        )
        assert db.execute("SELECT count(*) FROM usage_cost_events").fetchone()[0] >= ledger
    refused = local_deployment.run("purge_request_logs.yml", retention="2d")
    assert refused.rc != 0 and "retention must be 1d, 3d or 7d" in refused.output


def test_migration_recovery_other_error_changes_nothing(local_deployment: Deployment) -> None:
    with sqlite_connect(local_deployment) as db:
        # A breaking migration of a newer release: not a reset case, and this release must not run.
        db.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, breaking) "
            "VALUES (99, 'from_the_future', 'x', 0, 1)"
        )
    result = local_deployment.run("migration_recovery.yml", confirm_reset=True)
    assert result.rc != 0
    assert 'NOT "database reset required"; nothing was changed' in result.output
    with sqlite_connect(local_deployment) as db:
        assert db.execute("SELECT count(*) FROM schema_migrations WHERE version = 99").fetchone()[0] == 1
        db.execute("DELETE FROM schema_migrations WHERE version = 99")
    # The instances answered /readyz 503 meanwhile and haproxy took them out: hand on a serving one.
    local_deployment.wait_in_rotation()


def test_migration_recovery_reset_only_with_confirmation(local_deployment: Deployment) -> None:
    key = local_deployment.secrets()["GATEWAY_SEED_KEY"]
    extra = local_deployment.gateway("keys", "create", "--service-account", "extra", "--name", "doomed")
    assert extra.returncode == 0, extra.stderr
    with sqlite_connect(local_deployment) as db:
        db.execute("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1")
    refused = local_deployment.run("migration_recovery.yml")
    assert (
        refused.rc != 0
        and "database reset required" in refused.output
        and "confirm_reset=true" in refused.output
    )
    with sqlite_connect(local_deployment) as db:
        assert (
            db.execute("SELECT checksum FROM schema_migrations WHERE version = 1").fetchone()[0] == "tampered"
        )
    local_deployment.ok("migration_recovery.yml", confirm_reset=True)
    with sqlite_connect(local_deployment) as db:
        assert (
            db.execute("SELECT checksum FROM schema_migrations WHERE version = 1").fetchone()[0] != "tampered"
        )
        assert db.execute("SELECT count(*) FROM api_keys WHERE name = 'doomed'").fetchone()[0] == 0
    assert _chat(local_deployment, key).status_code == 200
    assert list((local_deployment.root / "backups").glob("pre-reset-*.json"))
