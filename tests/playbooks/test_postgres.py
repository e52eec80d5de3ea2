"""The PostgreSQL runbooks on one deployment whose server is the module's own (tests/faults/pg_server.py):
backup/restore, db_maintenance, slow_queries (the server can be restarted with pg_stat_statements
preloaded), provider_auth_check's failure branches, incident_error_rate's computed rate and
otlp_check against a real OTLP/HTTP receiver, each checked on the real outcome."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest

from tests.faults.pg_server import ThrowawayPostgres
from tests.playbooks.conftest import RELEASE_V1, Deployment
from tests.support.otlp_collector import OTLPCollectorStub
from tests.support.processes import FakeUpstreamProcess, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture(scope="module")
def upstream(module_launcher) -> FakeUpstreamProcess:
    """A real OpenAI-compatible upstream that records the Authorization header it saw."""
    return module_launcher.upstream()


@pytest.fixture(scope="module")
def pg_server() -> Iterator[ThrowawayPostgres]:
    """The module's own server: slow_queries restarts it with pg_stat_statements preloaded."""
    server = ThrowawayPostgres()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def collector() -> Iterator[OTLPCollectorStub]:
    """A real OTLP/HTTP receiver the deployment exports to (otlp_check closes it at the end)."""
    with OTLPCollectorStub() as stub:
        yield stub


@pytest.fixture(scope="module")
def pg_deployment(
    deployment_factory, pg_server: ThrowawayPostgres, upstream: FakeUpstreamProcess, collector
) -> Deployment:
    """PostgreSQL, the echo provider plus an openai_compat provider with a credential; models
    whose only route is off in the config (off-1) or weighs 0 (zero-1); every request traced
    to the collector."""
    subprocess.run(
        ["psql", "-d", pg_server.url, "-c", "CREATE DATABASE gateway"], check=True, capture_output=True
    )
    url = pg_server.url.rsplit("/", 1)[0] + "/gateway"
    deployment = deployment_factory(
        # pip's install path (the local inventory's uv installs every other test release)
        gateway_uv="",
        gateway_database_backend="postgres",
        gateway_postgres_url=url,
        gateway_otel_endpoint=collector.url,
        gateway_otel_sample_ratio=1.0,
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
            {"name": "off-1", "routes": [{"provider": "echo", "upstream_model": "echo-1", "enabled": False}]},
            {"name": "zero-1", "routes": [{"provider": "echo", "upstream_model": "echo-1", "weight": 0}]},
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


def test_pip_installs_the_release_when_no_uv_is_named(pg_deployment: Deployment) -> None:
    pyvenv = (pg_deployment.root / "current" / "venv" / "pyvenv.cfg").read_text()
    assert "\nuv = " not in pyvenv and "home = " in pyvenv


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


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    conn.close()
    return rows


def test_db_maintenance_vacuums_reindexes_and_terminates_old_idle_connections(
    pg_deployment: Deployment,
) -> None:
    url = pg_deployment.vars["gateway_postgres_url"]
    counts = "SELECT relname, vacuum_count, analyze_count FROM pg_stat_user_tables ORDER BY 1"
    indexes = (
        "SELECT indexrelid::regclass::text, pg_relation_filenode(indexrelid) FROM pg_index "
        "WHERE indrelid IN ('request_logs'::regclass, 'request_log_tags'::regclass, "
        "'request_log_attempts'::regclass) ORDER BY 1"
    )
    before, files_before = dict((t, (v, a)) for t, v, a in _rows(url, counts)), dict(_rows(url, indexes))
    stale = [psycopg2.connect(url, application_name="maintenance-stale") for _ in range(3)]
    for conn in stale:
        conn.autocommit = True
        conn.cursor().execute("SELECT 1")
    time.sleep(4)  # older than the 3 s threshold below
    fresh = [psycopg2.connect(url, application_name="maintenance-fresh") for _ in range(2)]
    stop = threading.Event()

    def keep_fresh() -> None:  # idle, but active within the last second: younger than the threshold
        while not stop.wait(0.3):
            for conn in fresh:
                conn.cursor().execute("SELECT 1")
            for conn in fresh:
                conn.rollback()

    pinger = threading.Thread(target=keep_fresh, daemon=True)
    pinger.start()
    try:
        result = pg_deployment.ok("db_maintenance.yml", terminate_idle_minutes=0.05, reindex=True)
    finally:
        stop.set()
        pinger.join(timeout=10)
    assert int(re.search(r"terminated idle: (\d+)", result.output).group(1)) >= 3
    for conn in stale:
        with pytest.raises(psycopg2.OperationalError):
            conn.cursor().execute("SELECT 1")
    for conn in fresh:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        conn.close()
    after = {t: (v, a) for t, v, a in _rows(url, counts)}
    for table in ("api_keys", "request_logs", "usage_cost_events"):
        assert after[table][0] > before[table][0], (
            f"{table} was not vacuumed: {before[table]} -> {after[table]}"
        )
        assert after[table][1] > before[table][1], (
            f"{table} was not analyzed: {before[table]} -> {after[table]}"
        )
    files_after = dict(_rows(url, indexes))
    assert files_before and set(files_after) == set(files_before)
    assert all(files_after[i] != files_before[i] for i in files_before), (files_before, files_after)
    assert re.search(r"vacuumed in the last hour: (\d+) of \1 tables", result.output)
    assert "reindexed: 3 request-log tables" in result.output


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


def _flat(output: str) -> str:
    """Ansible's YAML callback wraps long messages and doubles quotes inside quoted strings."""
    return re.sub(r"\s+", " ", output).replace("''", "'")


def _admin(deployment: Deployment) -> httpx.Client:
    password = deployment.secrets()["GATEWAY_BOOTSTRAP_ADMIN_PASSWORD"]

    def login() -> httpx.Response | None:
        answer = httpx.post(
            f"{deployment.url}/admin/api/session",
            json={"email": "admin@localhost", "password": password},
            timeout=10,
        )
        # 503 login_unavailable: the throttle could not reach the database this time ("retry shortly").
        return None if answer.status_code == 503 else answer

    try:
        answer = wait_until(login, timeout=30)
    except AssertionError:
        logs = "".join(
            p.read_text()[-3000:] for p in sorted((deployment.root / "logs").glob("gateway-*.log"))
        )
        raise AssertionError(f"admin login kept answering 503; instance logs:\n{logs}") from None
    assert answer.status_code == 200, answer.text
    return httpx.Client(
        base_url=f"{deployment.url}/admin/api",
        headers={"Authorization": f"Bearer {answer.json()['token']}"},
        timeout=10,
    )


def test_provider_auth_check_names_each_failure(pg_deployment: Deployment) -> None:
    pg_deployment.ok("provider_auth_check.yml", model="up-1")

    secrets_file = pg_deployment.root / "etc" / "secrets.env"
    kept = secrets_file.read_text()
    secrets_file.write_text(
        "".join(line for line in kept.splitlines(True) if not line.startswith("UPSTREAM_API_KEY="))
    )
    try:
        missing = pg_deployment.run("provider_auth_check.yml", model="up-1")
    finally:
        secrets_file.write_text(kept)
    assert missing.rc != 0
    assert (
        "Missing secret: providers[1].api_key: environment variable UPSTREAM_API_KEY is not set"
        in missing.output
    )

    # A pricing id the release's catalog does not know (the config on the host edited by hand).
    instance = pg_deployment.root / "etc" / "instances" / "a.yaml"
    config = instance.read_text()
    instance.write_text(
        config.replace("pricing_provider_id: self_hosted", "pricing_provider_id: no-such-catalog-id")
    )
    try:
        pricing = pg_deployment.run("provider_auth_check.yml", model="up-1")
    finally:
        instance.write_text(config)
    assert pricing.rc != 0
    assert (
        "Unsupported pricing id: providers[1].pricing_provider_id: 'no-such-catalog-id' is not in the "
        "bundled pricing catalog" in pricing.output
    )

    off = pg_deployment.run("provider_auth_check.yml", model="off-1")
    assert off.rc != 0 and "Model 'off-1': every route is disabled in the config" in off.output
    zero = pg_deployment.run("provider_auth_check.yml", model="zero-1")
    assert zero.rc != 0 and "Model 'zero-1': every enabled route has weight 0" in zero.output

    admin = _admin(pg_deployment)
    assert admin.post("/providers/upstream/disable").status_code == 200
    try:
        overridden = pg_deployment.run("provider_auth_check.yml", model="up-1")
    finally:
        assert admin.post("/providers/upstream/enable").status_code == 200
    assert overridden.rc != 0
    assert "Model 'up-1' is switched off by an admin override stored in the database" in overridden.output
    assert "providers disabled: ['upstream']" in overridden.output
    assert admin.post("/routes/disable", json={"key": "up-1/upstream/up-1"}).status_code == 200
    try:
        route_off = pg_deployment.run("provider_auth_check.yml", model="up-1")
    finally:
        assert admin.post("/routes/enable", json={"key": "up-1/upstream/up-1"}).status_code == 200
    assert route_off.rc != 0 and "routes disabled: ['up-1/upstream/up-1']" in route_off.output
    pg_deployment.ok("provider_auth_check.yml", model="up-1")


def test_incident_error_rate_computes_the_rate(
    pg_deployment: Deployment, upstream: FakeUpstreamProcess
) -> None:
    """7 answered requests and 3 refused by the upstream (500): the runbook reports 30.0%."""
    key = pg_deployment.secrets()["GATEWAY_SEED_KEY"]
    admin = _admin(pg_deployment)
    newest = admin.get("/request-logs", params={"limit": 1}).json()["data"]
    since_id = newest[0]["id"] if newest else 0
    upstream.control(mode="error500")
    statuses = []
    try:
        for model in ["echo-1"] * 4 + ["up-1"] * 3 + ["echo-1"] * 3:
            body = {"model": model, "messages": [{"role": "user", "content": "incident"}]}
            answer = httpx.post(
                f"{pg_deployment.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            statuses.append(answer.status_code)
    finally:
        upstream.control(mode="ok")
    assert sum(s >= 400 for s in statuses) == 3, statuses

    def logged() -> bool:  # the request-log writer flushes off the hot path
        data = admin.get("/request-logs", params={"limit": 10}).json()["data"]
        return len(data) == 10 and all(row["id"] > since_id for row in data)

    wait_until(logged, timeout=30)
    result = pg_deployment.ok("incident_error_rate.yml", recent_requests=10, reset_circuit="upstream")
    found = re.search(r"error rate over the last (\d+) requests: ([\d.]+)% \((\d+) errors\)", result.output)
    assert found, result.output[-3000:]
    assert int(found.group(1)) == 10 and int(found.group(3)) == 3
    assert abs(float(found.group(2)) - 30.0) < 0.05
    assert "ABOVE the threshold of 5.0%" in result.output
    assert pg_deployment.ok("provider_auth_check.yml", model="up-1").rc == 0


def test_otlp_check_reachable_then_unreachable(
    pg_deployment: Deployment, collector: OTLPCollectorStub
) -> None:
    key = pg_deployment.secrets()["GATEWAY_SEED_KEY"]
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "traced"}]}
    chat = httpx.post(
        f"{pg_deployment.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert chat.status_code == 200
    # Spans from the gateway itself (the runbook's own probe sends an empty request).
    wait_until(lambda: any(b"llm-gateway" in b for b in collector.bodies("/v1/traces")), timeout=30)
    reachable = pg_deployment.ok("otlp_check.yml")
    traces = f"{collector.url}/v1/traces"
    metrics = f"{collector.url}/v1/metrics"
    flat = _flat(reachable.output)
    assert f"answered (a collector listens): [['{traces}', 200], ['{metrics}', 200]]" in flat, flat[-3000:]
    assert "unreachable: []" in reachable.output

    collector.__exit__(None, None, None)  # the port is closed now
    unreachable = pg_deployment.run("otlp_check.yml")
    assert unreachable.rc != 0
    assert (
        f"OTLP export is configured but the collector is unreachable: {traces}, {metrics}"
        in unreachable.output
    )
    assert "Connection refused" in unreachable.output
    allowed = pg_deployment.ok("otlp_check.yml", otlp_allow_missing=True)
    assert f"unreachable: ['{traces}', '{metrics}']" in _flat(allowed.output)


def test_slow_queries_says_how_to_enable_pg_stat_statements(pg_deployment: Deployment) -> None:
    # The module's server starts without the extension: the runbook explains instead of failing.
    result = pg_deployment.ok("slow_queries.yml")
    assert "pg_stat_statements is not loaded on 127.0.0.1" in result.output
    assert "shared_preload_libraries" in result.output


def test_slow_queries_reports_a_slow_statement(
    pg_deployment: Deployment, pg_server: ThrowawayPostgres
) -> None:
    url = pg_deployment.vars["gateway_postgres_url"]
    conn = psycopg2.connect(pg_server.url)
    conn.autocommit = True
    conn.cursor().execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    conn.close()
    pg_server.stop()
    pg_server.start()
    # Both instances reconnect (readiness reads the database) before the playbook logs in.
    for instance in pg_deployment.instances:
        ready = f"http://127.0.0.1:{instance['port']}/readyz"
        wait_until(lambda ready=ready: httpx.get(ready, timeout=5).status_code == 200, 60)
    first = pg_deployment.ok("slow_queries.yml")  # creates the extension in the gateway's database
    assert "statements, the costliest (total execution time) first" in first.output
    with psycopg2.connect(url) as slow, slow.cursor() as cur:
        for _ in range(2):
            cur.execute("SELECT pg_sleep(0.4), 'runbook-slow-marker'")
    slow.close()
    result = pg_deployment.ok("slow_queries.yml", slow_query_limit=3)
    line = re.search(
        r"([\d.]+) ms total, ([\d.]+) ms mean, (\d+) calls: SELECT pg_sleep\(\$1\), \$2", result.output
    )
    assert line, result.output[-4000:]
    total, mean, calls = float(line.group(1)), float(line.group(2)), int(line.group(3))
    assert calls == 2 and mean >= 400 and total >= 800
    # The gateway came through the restart.
    key = pg_deployment.secrets()["GATEWAY_SEED_KEY"]
    models = httpx.get(
        pg_deployment.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert models.status_code == 200


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
