"""Migrations on SQLite as the app meets them: pre-flight, start-up refusal, readiness."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway_app import migrations
from gateway_app.app import GatewayApp
from gateway_app.config import parse_settings
from gateway_app.server import StartupRefused, preflight
from gateway_app.storage import connect
from tests.conftest import BASE_ENV
from tests.unit.conftest import InProcessGateway, sqlite_config


async def test_preflight_applies_every_migration_once_with_checksums(tmp_path: Path) -> None:
    settings = parse_settings(sqlite_config(tmp_path), environ=BASE_ENV)
    await preflight(settings, "<test>")
    await preflight(settings, "<test>")  # a restart finds nothing to do
    db = await connect(settings.database.url.value)
    try:
        rows = await db.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
    finally:
        await db.close()
    expected = migrations.available("sqlite")
    assert [(r["version"], r["name"], r["checksum"]) for r in rows] == [
        (m.version, m.name, m.checksum) for m in expected
    ]


async def test_check_mode_refuses_an_unmigrated_database_naming_the_command(tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    config["database"]["migrations"] = "check"
    settings = parse_settings(config, environ=BASE_ENV)
    with pytest.raises(StartupRefused, match=r"gateway migrate --apply --config cfg.yaml"):
        await preflight(settings, "cfg.yaml")


async def test_app_start_refuses_a_schema_behind_this_release(tmp_path: Path) -> None:
    settings = parse_settings(sqlite_config(tmp_path), environ=BASE_ENV)
    app = GatewayApp(settings)  # no pre-flight: the database is empty
    with pytest.raises(migrations.MigrationError, match=r"gateway migrate --apply"):
        await app.gateway.start()
    await app.gateway.stop()


async def test_readyz_turns_503_when_the_history_is_altered(gateway: InProcessGateway) -> None:
    assert (await gateway.client.get("/readyz")).status_code == 200
    db = await connect(gateway.db_url)
    try:
        await db.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = 1", "0" * 64)
    finally:
        await db.close()
    ready = await gateway.client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready" and "database reset required" in body["schema"]
