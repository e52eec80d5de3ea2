"""Budgets hold under concurrency and without usage from the client: no budget bypass.

Real gateway processes with the echo provider (priced 1 µ$/2 µ$ per token): a request
of "hi" costs 5 µ$ (1 prompt token, 2 completion tokens). Budgets are seeded through the
config and picked up by the budget tracker's refresh.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson

from tests.conftest import SEED_KEY, base_config
from tests.faults.harness import chat_request, drive
from tests.support import sql
from tests.support.processes import wait_until

_COST_PER_REQUEST_MICROS = 5  # echo: 1 prompt token x 1 µ$ + 2 completion tokens x 2 µ$
_LIMIT_MICROS = 20


def _budgeted(db_url: str) -> dict:
    config = base_config(db_url)
    config["service_accounts"][0]["budget"] = {"window": "daily", "limit_usd": _LIMIT_MICROS / 1_000_000}
    return config


def _wait_for_budget(url: str) -> None:
    """The seeded budget reaches the gateway's tracker within its refresh (2 s)."""
    time.sleep(2.5)
    assert httpx.get(url + "/readyz", timeout=5).status_code == 200


def _spent(db_url: str) -> int:
    return int(sql.scalar(db_url, "SELECT COALESCE(SUM(cost_micros), 0) FROM usage_cost_events") or 0)


def test_50_concurrent_requests_cannot_overshoot_a_tiny_budget(db_url, launcher) -> None:
    gateway = launcher.gateway(_budgeted(db_url))
    _wait_for_budget(gateway.url)
    results = asyncio.run(
        drive(
            gateway.port,
            chat_request(gateway.port, SEED_KEY, model="echo-1"),
            count=50,
            concurrency=50,
            timeout=30,
        )
    )
    statuses = [r.status for r in results]
    assert all(s in (200, 429) for s in statuses), statuses
    refused = [orjson.loads(r.body)["error"] for r in results if r.status == 429]
    assert refused and all(e["code"] == "budget_exceeded" for e in refused), refused
    gateway.stop()
    spent = _spent(db_url)
    answered = statuses.count(200)
    print(f"\n50 concurrent on a {_LIMIT_MICROS} µ$ budget: {answered} answered, {spent} µ$ spent")
    assert sql.count(db_url, "usage_cost_events") == answered
    # Without reservations all 50 pass (250 µ$, 12.5x the limit); with them, at most one
    # request's cost beyond the limit.
    assert spent <= _LIMIT_MICROS + _COST_PER_REQUEST_MICROS, spent


def test_streaming_without_include_usage_still_pays_and_trips_the_budget(db_url, launcher) -> None:
    gateway = launcher.gateway(_budgeted(db_url))
    _wait_for_budget(gateway.url)
    body = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"Authorization": f"Bearer {SEED_KEY}"}
    streams: list[bytes] = []
    tripped = None
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=10) as client:
        for _ in range(40):  # bounded: the budget allows 4 requests
            response = client.post("/v1/chat/completions", json=body)
            if response.status_code == 429:
                error = response.json()["error"]
                assert error["code"] == "budget_exceeded", error
                if "reserved" not in error["message"]:  # spent, not merely reserved by the last one
                    tripped = error
                    break
                time.sleep(0.3)  # the last request's cost settles within a writer flush
                continue
            assert response.status_code == 200, response.text
            streams.append(response.content)
            time.sleep(0.1)
    assert tripped is not None, f"{len(streams)} streams and the budget never tripped"
    # The gateway asked the upstream for usage; the client, which did not, never saw it.
    assert streams and all(b'"usage":{' not in s and s.endswith(b"data: [DONE]\n\n") for s in streams)
    wait_until(lambda: sql.count(db_url, "usage_cost_events") == len(streams), timeout=10)
    rows = sql.fetch(
        db_url, "SELECT prompt_tokens, completion_tokens, cost_micros, estimated FROM usage_cost_events"
    )
    assert all(r["cost_micros"] == _COST_PER_REQUEST_MICROS and not r["estimated"] for r in rows), rows
    assert _spent(db_url) >= _LIMIT_MICROS


def test_a_client_that_asks_for_usage_still_gets_it(db_url, launcher) -> None:
    gateway = launcher.gateway(base_config(db_url))
    body = {
        "model": "echo-1",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {SEED_KEY}"},
        timeout=10,
    )
    assert response.status_code == 200
    usage_events = [line for line in response.content.split(b"\n\n") if b'"usage":{' in line]
    assert len(usage_events) == 1
    assert orjson.loads(usage_events[0][len(b"data: ") :])["usage"]["completion_tokens"] == 2
