"""Migrations on SQLite and PostgreSQL: apply, idempotence, refused histories, concurrency."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway_app import migrations
from gateway_app.storage import connect
from tests.conftest import base_config
from tests.support.processes import REPO, run_cli


async def test_apply_then_idempotent(db_url: str) -> None:
    db = await connect(db_url)
    try:
        before = await migrations.check(db)
        assert before.current_version == 0 and before.pending
        applied = await migrations.apply(db)
        assert [m.version for m in applied] == list(range(1, before.latest_known + 1))
        assert await migrations.apply(db) == []
        after = await migrations.check(db)
        assert after.is_current and after.current_version == after.latest_known
        assert await db.fetchval("SELECT count(*) FROM schema_migrations") == after.latest_known
    finally:
        await db.close()


async def test_tampered_checksum_requires_reset(db_url: str) -> None:
    db = await connect(db_url)
    try:
        await migrations.apply(db)
        await db.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = 1", "0" * 64)
        with pytest.raises(migrations.ResetRequired, match=r"database reset required.*checksum"):
            await migrations.check(db)
        with pytest.raises(migrations.ResetRequired):
            await migrations.apply(db)
    finally:
        await db.close()


async def test_pre_baseline_tables_require_reset(db_url: str) -> None:
    db = await connect(db_url)
    try:
        await db.execute("CREATE TABLE legacy_requests (id INTEGER PRIMARY KEY)")
        with pytest.raises(migrations.ResetRequired, match=r"legacy_requests.*pre-baseline"):
            await migrations.check(db)
        assert await db.fetchval("SELECT count(*) FROM legacy_requests") == 0  # left intact
    finally:
        await db.close()


async def test_newer_breaking_schema_is_refused_but_not_a_reset(db_url: str) -> None:
    db = await connect(db_url)
    try:
        await migrations.apply(db)
        await db.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, breaking) "
            "VALUES (998, 'future_additive', 'x', 0, $1), (999, 'future_breaking', 'y', 0, $2)",
            False,
            True,
        )
        with pytest.raises(migrations.SchemaTooNew, match="version 999"):
            await migrations.check(db)
    finally:
        await db.close()


async def test_newer_additive_schema_still_runs_this_release(db_url: str) -> None:
    db = await connect(db_url)
    try:
        await migrations.apply(db)
        await db.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at, breaking) "
            "VALUES (999, 'future_additive', 'x', 0, $1)",
            False,
        )
        status = await migrations.check(db)
        assert status.is_current and status.ahead == [999] and status.database_version == 999
        assert "ahead of this release" in status.summary() and "0999" in status.summary()
        assert await migrations.apply(db) == []  # nothing to do, nothing refused
    finally:
        await db.close()


def test_compatibility_marker_is_parsed_and_checked() -> None:
    assert migrations.Migration(2, "x", "-- compatibility: breaking\nDROP TABLE t;").breaking
    assert not migrations.Migration(2, "x", "-- compatibility: additive\nCREATE TABLE t (id int);").breaking
    assert not migrations.Migration(2, "x", "CREATE TABLE t (id int);").breaking
    with pytest.raises(migrations.MigrationError, match="'additive' or 'breaking'"):
        _ = migrations.Migration(2, "x", "-- compatibility: maybe\n").breaking


async def test_reset_drops_everything_and_allows_a_fresh_baseline(db_url: str) -> None:
    db = await connect(db_url)
    try:
        await db.execute("CREATE TABLE legacy_requests (id INTEGER PRIMARY KEY)")
        dropped = await migrations.reset(db)
        assert dropped == ["legacy_requests"]
        assert await migrations.apply(db)
        assert (await migrations.check(db)).is_current
    finally:
        await db.close()


def _write_config(tmp_path: Path, db_url: str) -> Path:
    path = tmp_path / "migrate.yaml"
    path.write_text(yaml.safe_dump(base_config(db_url)))
    return path


def test_cli_check_exit_codes(db_url: str, tmp_path: Path) -> None:
    config = str(_write_config(tmp_path, db_url))
    env = {"GATEWAY_SEED_KEY": "x", "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": "x"}
    pending = run_cli("migrate", "--check", "--config", config, env=env)
    assert pending.returncode == 1, pending.stderr
    assert "pending" in pending.stdout
    assert run_cli("migrate", "--apply", "--config", config, env=env).returncode == 0
    current = run_cli("migrate", "--check", "--config", config, env=env)
    assert current.returncode == 0 and "current" in current.stdout
    refused = run_cli("migrate", "--reset", "--config", config, env=env)
    assert refused.returncode == 2 and "--confirm-reset" in refused.stderr


def test_cli_unreachable_postgres_names_host(tmp_path: Path) -> None:
    config = str(_write_config(tmp_path, "postgresql://postgres:s3cret-pw@127.0.0.1:1/nowhere"))
    env = {"GATEWAY_SEED_KEY": "x", "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": "x"}
    result = run_cli("migrate", "--check", "--config", config, env=env)
    assert result.returncode == 2
    assert "127.0.0.1:1/nowhere" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout


def test_concurrent_migrators_end_with_one_history(db_url: str, tmp_path: Path) -> None:
    config = str(_write_config(tmp_path, db_url))
    env = {"GATEWAY_SEED_KEY": "x", "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": "x", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "gateway_app", "migrate", "--apply", "--config", config]
    procs = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    appliers = [out for out, _ in outputs if "applied 0001_baseline" in out]
    assert len(appliers) == 1, outputs
    status = run_cli("migrate", "--status", "--config", config, env=env)
    assert status.stdout.count("0001_baseline  applied") == 1
