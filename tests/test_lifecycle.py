"""Process lifecycle: graceful drain on SIGTERM, refusal to serve a stale schema, readiness."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from gateway_app.storage import connect
from tests.conftest import SEED_KEY, base_config
from tests.support.processes import BackgroundStream, run_cli


def _stream_config(db_url: str, upstream_url: str) -> dict:
    config = base_config(db_url)
    config["providers"].append(
        {"name": "fake", "type": "openai_compat", "base_url": upstream_url, "pricing_provider_id": "openai"}
    )
    config["models"].append({"name": "slow", "routes": [{"provider": "fake", "upstream_model": "slow"}]})
    return config


def test_sigterm_drains_an_in_flight_stream(db_url, launcher) -> None:
    upstream = launcher.upstream()
    upstream.control(mode="slow_stream", delay=0.4)
    gateway = launcher.gateway(_stream_config(db_url, upstream.url))
    stream = BackgroundStream(gateway.url, SEED_KEY)
    assert stream.first_chunk.wait(10), "no first chunk"
    gateway.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    with pytest.raises(httpx.ConnectError):  # no longer accepting
        httpx.get(gateway.url + "/healthz", timeout=2)
    body = stream.body()
    assert body.rstrip().endswith(b"data: [DONE]"), body[-200:]
    assert b"says" in body and b"hi" in body
    assert gateway.proc.wait(30) == 0


def test_serve_refuses_pending_migrations_in_check_mode(db_url, launcher) -> None:
    config = base_config(db_url)
    config["database"]["migrations"] = "check"
    gateway = launcher.gateway(config, wait=False)
    assert gateway.proc.wait(30) == 2
    logs = gateway.logs()
    assert "gateway migrate --apply --config" in logs and str(gateway.config_path) in logs
    # Once migrated, the same config serves.
    assert (
        run_cli(
            "migrate",
            "--apply",
            "--config",
            str(gateway.config_path),
            env={"GATEWAY_SEED_KEY": SEED_KEY, "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": "x"},
        ).returncode
        == 0
    )
    served = launcher.gateway(config)
    assert httpx.get(served.url + "/readyz").status_code == 200


def test_readiness_fails_when_postgres_goes_away(databases, launcher) -> None:
    url = databases.new("postgres")
    gateway = launcher.gateway(base_config(url))
    assert httpx.get(gateway.url + "/readyz").status_code == 200
    databases.drop(url)
    response = httpx.get(gateway.url + "/readyz", timeout=10)
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready"
    # Liveness stays up: restarting the process would not bring the database back.
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_old_release_stays_ready_on_additive_migrations_of_a_newer_one(databases, launcher) -> None:
    """A rolling upgrade: the new release migrated; replicas of the old one keep serving."""
    url = databases.new("postgres")
    gateway = launcher.gateway(base_config(url))

    async def newer_release_migrated(breaking: bool) -> None:
        db = await connect(url)
        try:
            await db.execute("DELETE FROM schema_migrations WHERE version >= 900")
            await db.execute(
                "INSERT INTO schema_migrations (version, name, checksum, applied_at, breaking) "
                "VALUES (900, 'newer', 'x', 0, $1)",
                breaking,
            )
        finally:
            await db.close()

    asyncio.run(newer_release_migrated(breaking=False))
    ready = httpx.get(gateway.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["schema_version"] == 900 and "additive" in ready.json()["schema"]
    asyncio.run(newer_release_migrated(breaking=True))
    refused = httpx.get(gateway.url + "/readyz")
    assert refused.status_code == 503 and "newer release" in refused.json()["schema"]
