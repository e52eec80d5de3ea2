"""The control plane through the admin API and the CLI, on a real gateway per backend.

Service accounts, keys (grants, rotation, revocation), budgets enforced before
any provider call, request logs with their attempts, tags and redacted
payloads, the spend report and the writer's queue counters.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.conftest import BASE_ENV, SEED_KEY, base_config
from tests.support.admin import AdminClient
from tests.support.processes import run_cli, wait_until

PAYLOAD_CAP = 400


def _config(db_url: str, upstream_url: str) -> dict[str, Any]:
    config = base_config(db_url)
    config["providers"] += [
        {
            "name": "fake",
            "type": "openai_compat",
            "base_url": upstream_url,
            "pricing_provider_id": "openai",
            "timeout_seconds": 5,
        },
        # Nothing listens on the discard port: every call to it fails at once.
        {
            "name": "down",
            "type": "openai_compat",
            "base_url": "http://127.0.0.1:9/v1",
            "pricing_provider_id": "openai",
        },
    ]
    config["models"] += [
        {"name": "gpt-4o-mini", "routes": [{"provider": "fake", "upstream_model": "gpt-4o-mini"}]},
        {
            "name": "fallback",
            "routes": [
                {"provider": "down", "upstream_model": "gpt-4o-mini", "priority": 0},
                {"provider": "echo", "upstream_model": "echo-1", "priority": 1},
            ],
        },
    ]
    config["request_logging"] = {
        "mode": "redacted_payloads",
        "max_payload_bytes": PAYLOAD_CAP,
        "flush_interval_seconds": 0.2,
    }
    return config


@pytest.fixture(scope="module")
def stack(module_db_url, module_launcher):
    upstream = module_launcher.upstream()
    gateway = module_launcher.gateway(_config(module_db_url, upstream.url))
    return gateway, upstream, AdminClient(gateway.url)


@pytest.fixture
def gateway(stack):
    return stack[0]


@pytest.fixture
def upstream(stack):
    return stack[1]


@pytest.fixture
def admin(stack) -> AdminClient:
    return stack[2]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _chat(gateway, key: str, model: str = "echo-1", content: str = "hi", **extra: Any) -> httpx.Response:
    headers = {**_auth(key), **extra.pop("headers", {})}
    body = {**extra, "model": model, "messages": [{"role": "user", "content": content}]}
    return httpx.post(gateway.url + "/v1/chat/completions", headers=headers, json=body, timeout=10)


def _new_key(admin: AdminClient, account: str, name: str, models: Any = "all") -> dict[str, Any]:
    response = admin.post("/keys", {"service_account": account, "name": name, "models": models})
    assert response.status_code == 201, response.text
    return response.json()


def test_control_plane_routes_need_an_admin_session(gateway) -> None:
    for method, path in (
        ("GET", "/service-accounts"),
        ("POST", "/keys"),
        ("POST", "/keys/abc/rotate"),
        ("GET", "/request-logs"),
        ("GET", "/request-logs/queue"),
        ("GET", "/spend"),
    ):
        response = httpx.request(method, gateway.url + "/admin/api" + path)
        assert response.status_code == 401, path


def test_service_accounts_create_list_disable(gateway, admin) -> None:
    created = admin.post(
        "/service-accounts", {"name": "team-a", "budget": {"window": "weekly", "limit_usd": 12.5}}
    )
    assert created.status_code == 201, created.text
    assert created.json()["budget"]["window"] == "weekly" and created.json()["budget"]["spent_usd"] == 0
    assert admin.post("/service-accounts", {"name": "team-a"}).json()["error"]["code"] == "conflict"
    bad = admin.post("/service-accounts", {"name": "x", "budget": {"window": "hourly", "limit_usd": 1}})
    assert bad.status_code == 400 and "daily, weekly, monthly" in bad.json()["error"]["message"]
    listed = {a["name"]: a for a in admin.get("/service-accounts").json()["data"]}
    assert listed["team-a"]["budget"]["limit_usd"] == 12.5 and listed["tests"]["budget"] is None
    assert admin.put("/service-accounts/team-a/budget", None).json()["budget"] is None
    key = _new_key(admin, "team-a", "worker")["key"]
    assert _chat(gateway, key).status_code == 200
    assert admin.post("/service-accounts/team-a/disable").json()["disabled"] is True
    wait_until(lambda: _chat(gateway, key).status_code == 401)
    assert admin.post("/service-accounts/team-a/enable").json()["disabled"] is False
    wait_until(lambda: _chat(gateway, key).status_code == 200)
    assert admin.post("/service-accounts/ghost/disable").status_code == 404


def test_key_secret_shown_once_and_grants_hide_models(gateway, admin) -> None:
    admin.post("/service-accounts", {"name": "granted"})
    created = _new_key(admin, "granted", "echo-only", ["echo-1"])
    key, public_id = created["key"], created["public_id"]
    assert key.startswith(f"gwk_{public_id}.") and created["models"] == ["echo-1"]
    listed = admin.get("/keys").text
    assert public_id in listed and key.split(".")[1] not in listed
    models = httpx.get(gateway.url + "/v1/models", headers=_auth(key)).json()["data"]
    assert [m["id"] for m in models] == ["echo-1"]
    all_models = httpx.get(gateway.url + "/v1/models", headers=_auth(SEED_KEY)).json()["data"]
    assert "gpt-4o-mini" in [m["id"] for m in all_models]
    refused = _chat(gateway, key, "gpt-4o-mini")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
    assert _chat(gateway, key, "echo-1").status_code == 200
    unknown = admin.post("/keys", {"service_account": "granted", "name": "x", "models": ["gpt-9"]})
    assert unknown.status_code == 400 and "gpt-9" in unknown.json()["error"]["message"]
    orphan = admin.post("/keys", {"service_account": "nobody", "name": "x"})
    assert orphan.status_code == 404


def test_rotate_then_revoke_through_the_api(gateway, admin) -> None:
    admin.post("/service-accounts", {"name": "rotating"})
    old = _new_key(admin, "rotating", "svc", ["echo-1"])
    rotated = admin.post(f"/keys/{old['public_id']}/rotate")
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["public_id"] != old["public_id"] and new["old"]["public_id"] == old["public_id"]
    assert (new["service_account"], new["name"], new["models"]) == ("rotating", "svc", ["echo-1"])
    assert _chat(gateway, new["key"]).status_code == 200
    assert _chat(gateway, old["key"]).status_code == 200  # no grace period asked: the old key stays
    assert admin.post(f"/keys/{old['public_id']}/revoke").status_code == 200
    wait_until(lambda: _chat(gateway, old["key"]).status_code == 401)
    assert _chat(gateway, new["key"]).status_code == 200
    assert admin.post(f"/keys/{old['public_id']}/revoke").status_code == 404  # already revoked
    # A grace period schedules the revocation.
    graced = admin.post(f"/keys/{new['public_id']}/rotate", {"revoke_old_after_seconds": 3600}).json()
    assert graced["old"]["revoked_at"] > time.time() * 1000 + 3500_000
    assert _chat(gateway, new["key"]).status_code == 200


def test_rotate_through_the_cli_revokes_the_old_key(gateway, admin) -> None:
    old = _new_key(admin, "tests", "cli-rotated")
    rotated = run_cli(
        "keys",
        "rotate",
        old["public_id"],
        "--revoke-old-after",
        "0s",
        "--config",
        str(gateway.config_path),
        env=BASE_ENV,
    )
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip()
    assert new_key.startswith("gwk_") and new_key != old["key"]
    wait_until(lambda: _chat(gateway, old["key"]).status_code == 401)
    assert _chat(gateway, new_key).status_code == 200
    missing = run_cli(
        "keys", "rotate", "gwk_nosuchkey0000", "--config", str(gateway.config_path), env=BASE_ENV
    )
    assert missing.returncode == 2 and "no active key" in missing.stderr


def test_budget_exhaustion_is_429_before_the_upstream_is_called(gateway, upstream, admin) -> None:
    # One fake-upstream answer (7 prompt + 3 completion tokens of gpt-4o-mini) costs 3 micro-USD.
    admin.post("/service-accounts", {"name": "frugal", "budget": {"window": "daily", "limit_usd": 0.000002}})
    key = _new_key(admin, "frugal", "k")["key"]
    assert _chat(gateway, key, "gpt-4o-mini").status_code == 200
    wait_until(lambda: _chat(gateway, key, "gpt-4o-mini").status_code == 429)
    seen = upstream.stats()["requests"]
    again = _chat(gateway, key, "gpt-4o-mini", stream=True)
    assert again.status_code == 429
    error = again.json()["error"]
    assert (error["code"], error["type"]) == ("budget_exceeded", "insufficient_quota")
    assert "'frugal'" in error["message"] and "daily" in error["message"] and "$0.000002" in error["message"]
    assert upstream.stats()["requests"] == seen  # refused before any provider call
    account = next(a for a in admin.get("/service-accounts").json()["data"] if a["name"] == "frugal")
    assert account["budget"]["spent_usd"] >= 0.000002
    # Raising the budget lets the account through again within the refresh interval.
    admin.put("/service-accounts/frugal/budget", {"window": "daily", "limit_usd": 10})
    wait_until(lambda: _chat(gateway, key, "gpt-4o-mini").status_code == 200)
    assert _chat(gateway, SEED_KEY, "gpt-4o-mini").status_code == 200  # other accounts never affected


def test_request_log_detail_with_tags_redacted_payload_and_truncation(gateway, admin) -> None:
    request_id = f"cp-{time.monotonic_ns()}"
    response = _chat(
        gateway,
        SEED_KEY,
        content="x" * (PAYLOAD_CAP * 2),
        api_key="sk-never-store",
        headers={
            "x-request-id": request_id,
            "x-gateway-service": "billing",
            "x-gateway-component": "invoicer",
            "x-gateway-env": "ci",
            "x-gateway-tags": "team=payments, ticket=42",
        },
    )
    assert response.status_code == 200
    wait_until(lambda: admin.get(f"/request-logs/{request_id}").status_code == 200)
    detail = admin.get(f"/request-logs/{request_id}").json()
    assert detail["request_id"] == request_id and detail["model"] == "echo-1" and detail["status_code"] == 200
    assert detail["service_account"] == "tests" and detail["prompt_tokens"] == 1
    assert detail["tags"] == {
        "service": "billing",
        "component": "invoicer",
        "env": "ci",
        "team": "payments",
        "ticket": "42",
    }
    assert [(a["attempt"], a["provider"], a["status_code"]) for a in detail["attempts"]] == [(1, "echo", 200)]
    payload = detail["payload"]
    assert payload["truncated"] is True and len(payload["request_body"].encode()) <= PAYLOAD_CAP
    assert "sk-never-store" not in str(payload) and "[redacted]" in payload["request_body"]
    assert admin.get(f"/request-logs/{detail['id']}").json()["request_id"] == request_id
    assert admin.get("/request-logs/no-such-request").status_code == 404


def test_attempts_of_a_fallback_are_logged(gateway, admin) -> None:
    request_id = f"fb-{time.monotonic_ns()}"
    response = _chat(gateway, SEED_KEY, "fallback", headers={"x-request-id": request_id})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "echo: hi"
    wait_until(lambda: admin.get(f"/request-logs/{request_id}").status_code == 200)
    detail = admin.get(f"/request-logs/{request_id}").json()
    attempts = detail["attempts"]
    assert [(a["provider"], a["status_code"]) for a in attempts] == [("down", None), ("echo", 200)]
    assert attempts[0]["error"] and detail["provider"] == "echo"


def test_request_log_filters(gateway, admin) -> None:
    key = _new_key(admin, "tests", "filtered", ["echo-1"])
    assert _chat(gateway, key["key"]).status_code == 200
    assert _chat(gateway, key["key"], "gpt-4o-mini").status_code == 404
    by_key = wait_until(
        lambda: len(rows := admin.get("/request-logs", key=key["public_id"]).json()["data"]) == 2 and rows
    )
    assert [r["status_code"] for r in by_key] == [404, 200]  # newest first
    assert [
        r["status_code"]
        for r in admin.get("/request-logs", key=key["public_id"], status="4xx").json()["data"]
    ] == [404]
    assert len(admin.get("/request-logs", key=key["public_id"], model="echo-1").json()["data"]) == 1
    assert (
        admin.get("/request-logs", key=key["public_id"], since=str(by_key[0]["created_at"] + 1)).json()[
            "data"
        ]
        == []
    )
    assert len(admin.get("/request-logs", key=key["public_id"], until="2999-01-01").json()["data"]) == 2
    assert len(admin.get("/request-logs", limit="1").json()["data"]) == 1
    bad = admin.get("/request-logs", since="yesterday")
    assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]


def test_spend_report_and_queue(gateway, admin) -> None:
    admin.post("/service-accounts", {"name": "spender"})
    key = _new_key(admin, "spender", "k")
    for _ in range(3):
        assert _chat(gateway, key["key"], "gpt-4o-mini").status_code == 200

    def spender_row() -> dict[str, Any] | None:
        rows = admin.get("/spend", group_by="service_account").json()["data"]
        row = next((r for r in rows if r["group"] == "spender"), None)
        return row if row and row["requests"] == 3 else None

    row = wait_until(spender_row)
    assert row == {
        "group": "spender",
        "requests": 3,
        "prompt_tokens": 21,
        "completion_tokens": 9,
        "cost_usd": pytest.approx(9e-6),  # 2.85 micro-USD a request, rounded to whole micro-USD
        "unpriced": 0,
    }
    by_key = {r["group"]: r for r in admin.get("/spend", group_by="key").json()["data"]}
    assert by_key[key["public_id"]]["requests"] == 3
    by_model = {r["group"] for r in admin.get("/spend", group_by="model").json()["data"]}
    assert {"gpt-4o-mini", "echo-1"} <= by_model
    days = admin.get("/spend", group_by="day").json()["data"]
    assert days[-1]["group"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert admin.get("/spend", group_by="planet").status_code == 400
    queue = admin.get("/request-logs/queue").json()
    assert set(queue) == {"depth", "dropped", "written", "write_errors"}
    assert queue["written"] >= 3 and queue["dropped"] == 0 and queue["write_errors"] == 0
