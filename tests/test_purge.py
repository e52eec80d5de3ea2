"""purge-request-logs: dry-run counts equal what apply deletes, the ledger is never touched, and the
daily schedule runs in exactly one of two replicas sharing a database."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import BASE_ENV, base_config
from tests.support import sql
from tests.support.processes import free_port, run_cli, wait_http, wait_until

DAY_MS = 86_400_000
OLD, RECENT = 1_105, 4  # more old logs than one purge batch (1000)


def _plant(db_url: str) -> None:
    """OLD request logs from two days ago, RECENT from now, each with children and a ledger row."""
    now = int(time.time() * 1000)
    logs = [(f"old-{i}", now - 2 * DAY_MS - i) for i in range(OLD)] + [
        (f"new-{i}", now - i) for i in range(RECENT)
    ]
    sql.execute_many(
        db_url,
        [
            (
                "INSERT INTO request_logs (request_id, created_at, operation, model, status_code, "
                "latency_ms) VALUES ($1, $2, 'chat', 'echo-1', 200, 3)",
                logs,
            ),
            (
                "INSERT INTO usage_cost_events (request_id, created_at, model, cost_micros, pricing_status) "
                "VALUES ($1, $2, 'echo-1', 5, 'priced')",
                logs,
            ),
        ],
    )
    ids = sql.fetch(db_url, "SELECT id FROM request_logs ORDER BY id")
    every = [(r["id"],) for r in ids]
    every_third = every[::3]
    sql.execute_many(
        db_url,
        [
            ("INSERT INTO request_log_tags (request_log_id, name, value) VALUES ($1, 'env', 'ci')", every),
            (
                "INSERT INTO request_log_tags (request_log_id, name, value) VALUES ($1, 'team', 'a')",
                every_third,
            ),
            (
                "INSERT INTO request_log_attempts (request_log_id, attempt, provider, upstream_model, "
                "status_code, latency_ms) VALUES ($1, 1, 'echo', 'echo-1', 200, 2)",
                every,
            ),
            (
                "INSERT INTO request_log_payloads (request_log_id, request_body, response_body) "
                "VALUES ($1, '{}', '{}')",
                every_third,
            ),
        ],
    )


def _migrated_config(db_url: str, workdir: Path, **logging: Any) -> tuple[dict[str, Any], Path]:
    config = base_config(db_url)
    config["request_logging"] = logging
    path = workdir / "purge.yaml"
    path.write_text(yaml.safe_dump(config))
    applied = run_cli("migrate", "--apply", "--config", str(path), env=BASE_ENV)
    assert applied.returncode == 0, applied.stderr
    return config, path


def _purge(path: Path, *flags: str) -> dict[str, Any]:
    result = run_cli(
        "purge-request-logs", "--retention", "1d", "--json", *flags, "--config", str(path), env=BASE_ENV
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_dry_run_counts_what_apply_deletes_and_the_ledger_stays(db_url, tmp_path) -> None:
    _, path = _migrated_config(db_url, tmp_path)
    _plant(db_url)
    ledger_before = sql.count(db_url, "usage_cost_events")
    planned = _purge(path, "--dry-run")
    old_thirds = len(range(0, OLD, 3))  # the first OLD ids are the old ones
    assert planned["dry_run"] is True
    assert planned["tables"] == {
        "request_logs": OLD,
        "request_log_payloads": old_thirds,
        "request_log_tags": OLD + old_thirds,
        "request_log_attempts": OLD,
    }
    assert sql.count(db_url, "request_logs") == OLD + RECENT  # a dry run deletes nothing
    applied = _purge(path)
    assert applied["dry_run"] is False and applied["tables"] == planned["tables"]
    assert applied["ledger_rows"] == planned["ledger_rows"] == ledger_before == OLD + RECENT
    assert sql.count(db_url, "usage_cost_events") == ledger_before
    assert sql.count(db_url, "request_logs") == RECENT
    assert sql.count(db_url, "request_log_attempts") == RECENT
    assert sql.scalar(db_url, "SELECT MIN(request_id) FROM request_logs").startswith("new-")
    assert set(_purge(path, "--dry-run")["tables"].values()) == {0}
    text = run_cli(
        "purge-request-logs", "--retention", "7d", "--dry-run", "--config", str(path), env=BASE_ENV
    )
    assert "request_logs: would delete 0" in text.stdout and "usage_cost_events: untouched" in text.stdout
    refused = run_cli("purge-request-logs", "--retention", "2d", "--config", str(path), env=BASE_ENV)
    assert refused.returncode == 2 and "1d" in refused.stderr


def test_two_replicas_purge_once_a_day(db_url, tmp_path, launcher) -> None:
    # at_utc 00:00 has always passed today, so each replica's schedule is due as soon as it starts.
    purge = {"enabled": True, "retention": "1d", "at_utc": "00:00"}
    config, _ = _migrated_config(db_url, tmp_path, purge=purge)
    _plant(db_url)
    replicas = []
    for _ in range(2):  # started together, so that both race for the day
        replica_config = {**config, "server": {**config["server"], "port": free_port()}}
        replicas.append(launcher.gateway(replica_config, wait=False))
    for replica in replicas:
        wait_http(replica.url + "/readyz", proc=replica.proc)

    def finished_runs() -> list[dict[str, Any]]:
        return sql.fetch(db_url, "SELECT * FROM maintenance_runs WHERE finished_at IS NOT NULL")

    wait_until(finished_runs, timeout=20)
    runs = sql.fetch(db_url, "SELECT * FROM maintenance_runs")
    assert len(runs) == 1 and runs[0]["job"] == "purge_request_logs"
    assert runs[0]["utc_day"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert json.loads(runs[0]["details"])["tables"]["request_logs"] == OLD
    assert sql.count(db_url, "request_logs") == RECENT
    assert sql.count(db_url, "usage_cost_events") == OLD + RECENT

    def outcomes() -> list[str]:
        return sorted(
            "finished"
            if "scheduled purge finished" in r.logs()
            else "skipped"
            if "scheduled purge skipped" in r.logs()
            else "none"
            for r in replicas
        )

    wait_until(lambda: outcomes() == ["finished", "skipped"])
    assert outcomes() == ["finished", "skipped"]
