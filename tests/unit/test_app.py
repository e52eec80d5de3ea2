"""The ASGI app in process: auth, error shapes, routing and fallback decisions, readiness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway_app.keys import generate_key
from tests.conftest import SEED_KEY
from tests.unit.conftest import InProcessGateway, StartGateway, auth, sqlite_config

CHAT = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}


def _assert_openai_error(body: dict[str, Any], code: str, type_: str) -> dict[str, Any]:
    """OpenAI's error envelope, exactly: clients parse these four fields."""
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["type"] == type_ and error["message"]
    return error


async def test_health_models_and_chat_with_the_seeded_key(gateway: InProcessGateway) -> None:
    assert (await gateway.client.get("/healthz")).json() == {"status": "ok"}
    models = await gateway.client.get("/v1/models", headers=auth())
    assert models.status_code == 200
    assert [m["id"] for m in models.json()["data"]] == ["echo-1"]
    chat = await gateway.client.post("/v1/chat/completions", headers=auth(), json=CHAT)
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert chat.headers["x-request-id"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        auth(SEED_KEY[:-1] + ("A" if SEED_KEY[-1] != "A" else "B")),
        auth(generate_key()),  # well-formed, never issued
    ],
    ids=["missing", "malformed", "wrong-scheme", "wrong-secret", "unknown-key"],
)
async def test_bad_keys_get_the_same_401(gateway: InProcessGateway, headers: dict[str, str]) -> None:
    response = await gateway.client.post("/v1/chat/completions", headers=headers, json=CHAT)
    assert response.status_code == 401
    error = _assert_openai_error(response.json(), "invalid_api_key", "invalid_request_error")
    # The caller's key is never echoed back.
    assert SEED_KEY.split(".", 1)[1] not in error["message"]


async def test_revoked_key_is_refused_after_the_cache_refresh(gateway: InProcessGateway) -> None:
    admin = await gateway.admin_headers()
    created = await gateway.client.post(
        "/admin/api/keys", headers=admin, json={"service_account": "tests", "name": "short-lived"}
    )
    assert created.status_code == 201, created.text
    key, public_id = created.json()["key"], created.json()["public_id"]
    assert (await gateway.client.get("/v1/models", headers=auth(key))).status_code == 200
    revoked = await gateway.client.post(f"/admin/api/keys/{public_id}/revoke", headers=admin)
    assert revoked.status_code == 200, revoked.text
    await gateway.app.gateway.started.keys.refresh()  # what the background loop does every refresh interval
    assert (await gateway.client.get("/v1/models", headers=auth(key))).status_code == 401


async def test_key_limited_to_some_models_sees_only_those(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    config = sqlite_config(tmp_path)
    config["models"].append({"name": "echo-2", "routes": [{"provider": "echo", "upstream_model": "echo-2"}]})
    gateway = await start_gateway(config)
    created = await gateway.client.post(
        "/admin/api/keys",
        headers=await gateway.admin_headers(),
        json={"service_account": "tests", "name": "only-2", "models": ["echo-2"]},
    )
    key = created.json()["key"]
    listed = await gateway.client.get("/v1/models", headers=auth(key))
    assert [m["id"] for m in listed.json()["data"]] == ["echo-2"]
    refused = await gateway.client.post("/v1/chat/completions", headers=auth(key), json=CHAT)
    assert refused.status_code == 404
    _assert_openai_error(refused.json(), "model_not_found", "invalid_request_error")
    ok = await gateway.client.post(
        "/v1/chat/completions", headers=auth(key), json={**CHAT, "model": "echo-2"}
    )
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[]", None),
        (b'{"messages": []}', "model"),
        (b'{"model": "echo-1", "messages": "hi"}', "messages"),
        (b'{"model": "echo-1", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
    ],
)
async def test_malformed_requests_are_400_naming_the_param(
    gateway: InProcessGateway, body: bytes, param: str | None
) -> None:
    response = await gateway.client.post("/v1/chat/completions", headers=auth(), content=body)
    assert response.status_code == 400
    error = _assert_openai_error(response.json(), "invalid_request_error", "invalid_request_error")
    assert error["param"] == param


async def test_unknown_model_operation_and_paths(gateway: InProcessGateway) -> None:
    unknown = await gateway.client.post(
        "/v1/chat/completions", headers=auth(), json={**CHAT, "model": "gpt-7"}
    )
    assert unknown.status_code == 404
    assert (
        _assert_openai_error(unknown.json(), "model_not_found", "invalid_request_error")["param"] == "model"
    )
    no_route = await gateway.client.get("/v2/nothing")
    assert no_route.status_code == 404
    _assert_openai_error(no_route.json(), "not_found", "invalid_request_error")
    wrong_method = await gateway.client.get("/v1/chat/completions")
    assert wrong_method.status_code == 405
    _assert_openai_error(wrong_method.json(), "method_not_allowed", "invalid_request_error")


async def test_body_over_the_limit_is_413(start_gateway: StartGateway, tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    config["server"]["max_body_bytes"] = 1024
    gateway = await start_gateway(config)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2048}]}
    response = await gateway.client.post("/v1/chat/completions", headers=auth(), json=big)
    assert response.status_code == 413
    _assert_openai_error(response.json(), "request_too_large", "invalid_request_error")


def _with_fake_route(config: dict[str, Any], base_url: str, **resilience: Any) -> dict[str, Any]:
    """Model 'mixed': the fake upstream first (priority 0), the echo provider as the fallback."""
    config["providers"].append(
        {
            "name": "fake",
            "type": "openai_compat",
            "base_url": base_url,
            "api_key": "literal.upstream-token",
            "pricing_provider_id": "self_hosted",
            "timeout_seconds": 2,
            "connect_timeout_seconds": 1,
        }
    )
    config["models"].append(
        {
            "name": "mixed",
            "routes": [
                {"provider": "fake", "upstream_model": "fake-1", "priority": 0},
                {"provider": "echo", "upstream_model": "echo-1", "priority": 1},
            ],
        }
    )
    config["resilience"] = {"backoff_seconds": 0, **resilience}
    return config


async def test_first_priority_answers_while_it_is_healthy(
    start_gateway: StartGateway, tmp_path: Path, fake_upstream
) -> None:
    upstream, url = fake_upstream
    gateway = await start_gateway(_with_fake_route(sqlite_config(tmp_path), url))
    response = await gateway.client.post(
        "/v1/chat/completions", headers=auth(), json={**CHAT, "model": "mixed"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "fake says hi"
    assert upstream.last_authorization == "Bearer upstream-token" and upstream.last_model == "fake-1"


async def test_500s_fall_back_to_the_next_priority_then_the_circuit_skips_the_route(
    start_gateway: StartGateway, tmp_path: Path, fake_upstream
) -> None:
    upstream, url = fake_upstream
    upstream.mode = "error500"
    config = _with_fake_route(sqlite_config(tmp_path), url, breaker_failure_threshold=2)
    gateway = await start_gateway(config)
    for _ in range(2):
        response = await gateway.client.post(
            "/v1/chat/completions", headers=auth(), json={**CHAT, "model": "mixed"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert upstream.requests == 2
    # Two failures opened the breaker: the third request goes straight to echo.
    third = await gateway.client.post("/v1/chat/completions", headers=auth(), json={**CHAT, "model": "mixed"})
    assert third.status_code == 200 and upstream.requests == 2


async def test_upstream_client_error_is_passed_through_without_fallback(
    start_gateway: StartGateway, tmp_path: Path, fake_upstream
) -> None:
    upstream, url = fake_upstream
    upstream.mode = "error400"
    gateway = await start_gateway(_with_fake_route(sqlite_config(tmp_path), url))
    response = await gateway.client.post(
        "/v1/chat/completions", headers=auth(), json={**CHAT, "model": "mixed"}
    )
    assert response.status_code == 400
    error = _assert_openai_error(response.json(), "upstream_rejected_request", "invalid_request_error")
    assert error["message"] == "fake upstream failure 400"


async def test_every_route_failing_is_502_naming_the_model(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    config = _with_fake_route(sqlite_config(tmp_path), "http://127.0.0.1:9/v1")  # discard port: refused
    config["models"][-1]["routes"] = config["models"][-1]["routes"][:1]
    gateway = await start_gateway(config)
    response = await gateway.client.post(
        "/v1/chat/completions", headers=auth(), json={**CHAT, "model": "mixed"}
    )
    assert response.status_code == 502
    error = _assert_openai_error(response.json(), "upstream_error", "api_error")
    assert "'mixed'" in error["message"]


async def test_all_routes_disabled_is_503_no_route(start_gateway: StartGateway, tmp_path: Path) -> None:
    config = sqlite_config(tmp_path)
    config["models"][0]["routes"][0]["enabled"] = False
    gateway = await start_gateway(config)
    response = await gateway.client.post("/v1/chat/completions", headers=auth(), json=CHAT)
    assert response.status_code == 503
    _assert_openai_error(response.json(), "no_route_available", "api_error")


async def test_streaming_relays_sse_chunks_and_done(gateway: InProcessGateway) -> None:
    async with gateway.client.stream(
        "POST", "/v1/chat/completions", headers=auth(), json={**CHAT, "stream": True}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    text = "".join(
        choice["delta"].get("content", "")
        for event in events[:-1]
        for choice in orjson.loads(event[6:])["choices"]
    )
    assert text == "echo: hi"


async def test_readyz_reports_the_current_schema(gateway: InProcessGateway) -> None:
    ready = await gateway.client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["database"] == "ok"
    assert body["schema_version"] == body["schema_expected"] >= 1
