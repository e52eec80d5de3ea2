"""The request log writer in a real gateway: nothing queued is lost on SIGTERM, `disabled` still
writes the ledger, and an overflowing queue counts what it dropped."""

from __future__ import annotations

import signal

import httpx

from tests.conftest import SEED_KEY, base_config
from tests.support import sql
from tests.support.admin import AdminClient

# Nothing is written before shutdown: the batch never fills and the interval never passes.
_HOLD = {"flush_interval_seconds": 300, "batch_size": 10_000}


def _send(url: str, count: int) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {SEED_KEY}"}, timeout=10) as client:
        for i in range(count):
            response = client.post(
                "/v1/chat/completions",
                headers={"x-gateway-service": "flush-test"},
                json={"model": "echo-1", "messages": [{"role": "user", "content": f"message {i}"}]},
            )
            assert response.status_code == 200


def _stop(gateway) -> None:
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(30) == 0


def test_queued_logs_are_flushed_on_sigterm(db_url, launcher) -> None:
    config = base_config(db_url)
    config["request_logging"] = {"mode": "summary_only", **_HOLD}
    gateway = launcher.gateway(config)
    _send(gateway.url, 40)
    assert sql.count(db_url, "request_logs") == 0  # still queued in the process
    _stop(gateway)
    assert sql.count(db_url, "request_logs") == 40
    assert sql.count(db_url, "usage_cost_events") == 40
    assert sql.count(db_url, "request_log_tags") == 40
    assert sql.count(db_url, "request_log_attempts") == 40
    assert sql.count(db_url, "request_log_payloads") == 0  # summary_only keeps no bodies


def test_disabled_mode_keeps_the_ledger_and_overflow_sheds_detail_not_ledger(db_url, launcher) -> None:
    config = base_config(db_url)
    config["request_logging"] = {"mode": "disabled", "queue_max": 5, **_HOLD}
    gateway = launcher.gateway(config)
    _send(gateway.url, 8)
    queue = AdminClient(gateway.url).get("/request-logs/queue").json()
    # Past queue_max the detail is shed (counted); the ledger part stays queued.
    assert queue == {"depth": 8, "dropped": 3, "written": 0, "write_errors": 0}
    _stop(gateway)
    assert sql.count(db_url, "usage_cost_events") == 8
    assert sql.fetch(db_url, "SELECT DISTINCT pricing_status FROM usage_cost_events") == [
        {"pricing_status": "priced"}
    ]
    for table in ("request_logs", "request_log_tags", "request_log_attempts", "request_log_payloads"):
        assert sql.count(db_url, table) == 0, table


def test_a_full_queue_sheds_detail_then_refuses_requests_rather_than_lose_ledger_rows(
    db_url, launcher
) -> None:
    config = base_config(db_url)
    config["request_logging"] = {"mode": "summary_only", "queue_max": 4, "ledger_queue_max": 3, **_HOLD}
    gateway = launcher.gateway(config)
    _send(gateway.url, 7)
    # 4 with detail, 3 ledger-only (detail shed): the ledger headroom is used up, so the next
    # request is refused before it reaches a provider (nothing served goes unaccounted).
    with httpx.Client(base_url=gateway.url, headers={"Authorization": f"Bearer {SEED_KEY}"}) as client:
        refused = client.post(
            "/v1/chat/completions", json={"model": "echo-1", "messages": [{"role": "user", "content": "x"}]}
        )
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "ledger_backlog"
    queue = AdminClient(gateway.url).get("/request-logs/queue").json()
    assert queue == {"depth": 7, "dropped": 4, "written": 0, "write_errors": 0}  # the refusal's detail shed
    _stop(gateway)
    assert sql.count(db_url, "request_logs") == 4
    assert sql.count(db_url, "usage_cost_events") == 7
