"""backup.yml / restore.yml round trip and db_maintenance.yml on a PostgreSQL deployment."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import psycopg2
import pytest

from tests.playbooks.conftest import RELEASE_V1, Deployment
from tests.support.processes import FakeUpstreamProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def upstream(module_launcher) -> FakeUpstreamProcess:
    """A real OpenAI-compatible upstream that records the Authorization header it saw."""
    return module_launcher.upstream()


@pytest.fixture(scope="module")
def pg_deployment(deployment_factory, databases, upstream: FakeUpstreamProcess) -> Deployment:
    """PostgreSQL, the echo provider plus an openai_compat provider with a credential."""
    url = databases.new("postgres")
    deployment = deployment_factory(
        gateway_database_backend="postgres",
        gateway_postgres_url=url,
        gateway_providers=[
            {"name": "echo", "type": "echo"},
            {
                "name": "upstream",
                "type": "openai_compat",
                "base_url": upstream.url,
                "api_key": "env.UPSTREAM_API_KEY",
                "pricing_provider_id": "self_hosted",
            },
        ],
        gateway_models=[
            {
                "name": "echo-1",
                "operations": ["chat", "embeddings"],
                "routes": [{"provider": "echo", "upstream_model": "echo-1"}],
            },
            {"name": "up-1", "routes": [{"provider": "upstream", "upstream_model": "up-1"}]},
        ],
        gateway_provider_secrets={"UPSTREAM_API_KEY": "old-upstream-secret"},
    )
    deployment.ok("deploy.yml", gateway_wheel=str(deployment.releases.wheels[RELEASE_V1]))
    return deployment


def _psql(deployment: Deployment, sql: str) -> str:
    url = deployment.vars["gateway_postgres_url"]
    return subprocess.run(
        ["psql", "-At", "-d", url, "-c", sql], capture_output=True, text=True, check=True
    ).stdout


def test_backup_restore_round_trip(pg_deployment: Deployment) -> None:
    key = pg_deployment.secrets()["GATEWAY_SEED_KEY"]
    kept = pg_deployment.gateway("keys", "create", "--service-account", "ci", "--name", "kept")
    assert kept.returncode == 0, kept.stderr
    keys_before = _psql(pg_deployment, "SELECT name, revoked_at IS NULL FROM api_keys ORDER BY id")
    pg_deployment.ok("backup.yml", backup_name="round-trip")
    manifest = json.loads((pg_deployment.root / "backups" / "round-trip.json").read_text())
    assert manifest["backend"] == "postgres" and int(manifest["tables"]["api_keys"]) == 2
    # Changes after the backup: one key revoked, one added.
    public_id = kept.stdout.strip().split(".")[0].removeprefix("gwk_")
    assert pg_deployment.gateway("keys", "revoke", public_id).returncode == 0
    assert (
        pg_deployment.gateway("keys", "create", "--service-account", "ci", "--name", "lost").returncode == 0
    )
    assert _psql(pg_deployment, "SELECT name, revoked_at IS NULL FROM api_keys ORDER BY id") != keys_before
    result = pg_deployment.ok("restore.yml", restore_backup="round-trip")
    assert "checksum and row counts match its manifest" in result.output
    assert _psql(pg_deployment, "SELECT name, revoked_at IS NULL FROM api_keys ORDER BY id") == keys_before
    models = httpx.get(
        f"{pg_deployment.url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5
    )
    assert models.status_code == 200


def test_restore_refuses_a_tampered_backup(pg_deployment: Deployment) -> None:
    pg_deployment.ok("backup.yml", backup_name="tampered")
    dump = pg_deployment.root / "backups" / "tampered.dump"
    dump.write_bytes(dump.read_bytes() + b"x")
    result = pg_deployment.run("restore.yml", restore_backup="tampered")
    assert result.rc != 0 and "checksum matches=False" in result.output


def test_db_maintenance_reports_connections(pg_deployment: Deployment) -> None:
    result = pg_deployment.ok("db_maintenance.yml", terminate_idle_minutes=60, reindex=True)
    assert "connections: [" in result.output and "unused indexes:" in result.output


def test_rotate_provider_secret_reaches_the_upstream(pg_deployment: Deployment, upstream) -> None:
    result = pg_deployment.ok(
        "rotate_provider_secret.yml",
        provider="upstream",
        secret_name="UPSTREAM_API_KEY",
        new_secret_value="new-upstream-secret",
        model="up-1",
    )
    assert upstream.stats()["authorization"] == "Bearer new-upstream-secret"
    assert pg_deployment.secrets()["UPSTREAM_API_KEY"] == "new-upstream-secret"
    assert "new-upstream-secret" not in result.output


def _recording_clients(bin_dir: Path, log: Path) -> None:
    """pg_dump, pg_restore and psql wrappers that record their argv and how they got a password."""
    bin_dir.mkdir()
    for program in ("pg_dump", "pg_restore", "psql"):
        real = shutil.which(program)
        assert real, f"{program} is not installed"
        wrapper = bin_dir / program
        wrapper.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "{program} $*" >> {log}\n'
            f'[ -z "${{PGPASSWORD:-}}" ] || echo "PGPASSWORD set" >> {log}\n'
            'if [ -s "${PGPASSFILE:-}" ]; then\n'
            '  digest="$(cut -d: -f5- "$PGPASSFILE" | tr -d "\\n" | sha256sum | cut -d" " -f1)"\n'
            f'  printf "PGPASSFILE %s %s\\n" "$(stat -c %a "$PGPASSFILE")" "$digest" >> {log}\n'
            "fi\n"
            f'exec {real} "$@"\n'
        )
        wrapper.chmod(0o755)


def test_backup_and_restore_keep_the_password_off_every_command_line(
    pg_deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL's password reaches the clients in a 0600 PGPASSFILE only, never argv or the output."""
    password = f"pw-{tmp_path.name[-8:]}-Zq%40x"  # %40: a percent-encoded '@', decoded for PGPASSWORD
    url = pg_deployment.vars["gateway_postgres_url"].replace("postgres@", f"postgres:{password}@", 1)
    log = tmp_path / "argv.log"
    _recording_clients(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    backup = pg_deployment.ok(
        "backup.yml", "-vvv", backup_name="no-password-in-argv", gateway_postgres_url=url
    )
    restore = pg_deployment.ok(
        "restore.yml", "-vvv", restore_backup="no-password-in-argv", gateway_postgres_url=url
    )
    recorded = log.read_text()
    decoded = password.replace("%40", "@")
    for call in ("pg_dump --format=custom", "pg_restore --no-owner", "psql "):
        assert call in recorded
    for secret in (password, decoded):
        assert secret not in recorded, f"the password reached a process's argv:\n{recorded}"
        assert secret not in backup.output and secret not in restore.output
    assert "PGPASSWORD set" not in recorded
    delivered = {tuple(line.split()[1:]) for line in recorded.splitlines() if line.startswith("PGPASSFILE")}
    assert delivered == {("600", hashlib.sha256(decoded.encode()).hexdigest())}


def test_slow_queries_says_how_to_enable_pg_stat_statements(pg_deployment: Deployment) -> None:
    # The shared server does not preload the extension: the runbook explains instead of failing.
    result = pg_deployment.ok("slow_queries.yml")
    assert "pg_stat_statements is not loaded on 127.0.0.1" in result.output
    assert "shared_preload_libraries" in result.output


def test_db_connections_reports_and_terminates_only_when_confirmed(pg_deployment: Deployment) -> None:
    """Last in the module: it terminates the deployment's idle connections too, which the gateway survives."""
    url = pg_deployment.vars["gateway_postgres_url"]
    stale = [psycopg2.connect(url, application_name="stale-client") for _ in range(3)]
    stale[0].autocommit = stale[1].autocommit = True  # idle; the third stays idle in a transaction
    report = pg_deployment.ok("db_connections.yml")
    assert re.search(r"used \d+ of \d+ \(\d+ reserved for superusers\)", report.output)
    assert "stale-client@127.0.0.1/32=3" in report.output

    time.sleep(1.5)
    unconfirmed = pg_deployment.run("db_connections.yml", terminate_idle_minutes=0.02)
    assert unconfirmed.rc != 0 and "rerun with -e confirm_terminate=true" in unconfirmed.output
    for conn in stale:
        conn.cursor().execute("SELECT 1")

    time.sleep(1.5)
    terminated = pg_deployment.ok("db_connections.yml", terminate_idle_minutes=0.02, confirm_terminate=True)
    count = int(re.search(r"terminated (\d+) idle connections", terminated.output).group(1))
    assert count >= 3
    for conn in stale:
        with pytest.raises(psycopg2.OperationalError):
            conn.cursor().execute("SELECT 1")
    seed_key = pg_deployment.secrets()["GATEWAY_SEED_KEY"]
    models = httpx.get(pg_deployment.url + "/v1/models", headers={"Authorization": f"Bearer {seed_key}"})
    assert models.status_code == 200, "the gateway did not survive its idle connections being terminated"

    refused = pg_deployment.run("db_connections.yml", max_connections=500)
    assert refused.rc != 0 and "does not own the PostgreSQL server" in refused.output
    assert "modify-db-parameter-group" in refused.output
