"""The OpenAI API of a real gateway process, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import BASE_ENV, SEED_KEY, base_config
from tests.support.processes import run_cli


def _with_upstream(db_url: str, upstream_url: str, **route) -> dict:
    config = base_config(db_url)
    config["providers"].append(
        {
            "name": "fake",
            "type": "openai_compat",
            "base_url": upstream_url,
            "api_key": "literal.upstream-token",
            "pricing_provider_id": "openai",
            "timeout_seconds": 5,
        }
    )
    config["models"].append(
        {
            "name": "gpt-4o-mini",
            "operations": ["chat", "embeddings"],
            "routes": [{"provider": "fake", "upstream_model": "gpt-4o-mini", **route}],
        }
    )
    return config


@pytest.fixture(scope="module")
def stack(module_db_url, module_launcher):
    """One upstream and one gateway per backend, shared by this module's tests."""
    upstream = module_launcher.upstream()
    return module_launcher.gateway(_with_upstream(module_db_url, upstream.url)), upstream


@pytest.fixture
def gateway(stack):
    return stack[0]


@pytest.fixture
def upstream(stack):
    yield stack[1]
    stack[1].control(mode="ok")


def _auth(key: str = SEED_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_health_and_readiness(gateway) -> None:
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["schema_version"] == ready["schema_expected"] >= 1


def test_models_lists_configured_models(gateway) -> None:
    response = httpx.get(gateway.url + "/v1/models", headers=_auth())
    assert response.status_code == 200
    assert sorted(m["id"] for m in response.json()["data"]) == ["echo-1", "gpt-4o-mini"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        _auth(SEED_KEY[:-1] + ("A" if SEED_KEY[-1] != "A" else "B")),
    ],
    ids=["missing", "malformed", "wrong-scheme", "wrong-secret"],
)
def test_bad_keys_get_401(gateway, headers) -> None:
    response = httpx.get(gateway.url + "/v1/models", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_unknown_model_is_404(gateway) -> None:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=_auth(),
        json={"model": "gpt-7", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_chat_through_openai_sdk_with_upstream_auth_and_model_mapping(gateway, upstream) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=SEED_KEY, max_retries=0)
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
    )
    assert completion.choices[0].message.content == "fake says hi"
    assert completion.usage.total_tokens == 10
    stats = upstream.stats()
    # The gateway authenticates to the upstream with the provider secret, never the caller's key.
    assert stats["authorization"] == "Bearer upstream-token"
    assert stats["model"] == "gpt-4o-mini"


def test_streaming_through_openai_sdk(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=SEED_KEY, max_retries=0)
    for model, expected in (("gpt-4o-mini", "fake says hi"), ("echo-1", "echo: stream me")):
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "stream me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == expected
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_embeddings(gateway) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=SEED_KEY, max_retries=0)
    result = client.embeddings.create(model="echo-1", input=["a", "b"])
    assert [d.index for d in result.data] == [0, 1] and len(result.data[0].embedding) == 8
    assert client.embeddings.create(model="gpt-4o-mini", input="x").data[0].embedding == [0.1, 0.2, 0.3]


def test_upstream_down_is_502_quickly(db_url, launcher) -> None:
    gateway = launcher.gateway(_with_upstream(db_url, "http://127.0.0.1:9/v1"))  # discard port: refused
    started = time.monotonic()
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=_auth(),
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert time.monotonic() - started < 1.5


def test_upstream_hang_is_504_at_the_provider_timeout(db_url, launcher) -> None:
    upstream = launcher.upstream()
    config = _with_upstream(db_url, upstream.url)
    config["providers"][1]["timeout_seconds"] = 0.5
    gateway = launcher.gateway(config)
    upstream.control(mode="hang")
    started = time.monotonic()
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=_auth(),
        timeout=10,
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 3


def test_upstream_client_error_is_passed_through(gateway, upstream) -> None:
    upstream.control(mode="error400")
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=_auth(),
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 400
    assert "fake upstream failure 400" in response.json()["error"]["message"]


def test_key_lifecycle_and_revocation_reaches_the_running_gateway(gateway) -> None:
    config = str(gateway.config_path)
    created = run_cli(
        "keys",
        "create",
        "--service-account",
        "ci",
        "--name",
        "ci-key",
        "--models",
        "echo-1",
        "--config",
        config,
        env=BASE_ENV,
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("gwk_")
    listed = run_cli("keys", "list", "--config", config, env=BASE_ENV)
    assert key.split(".")[0][4:] in listed.stdout and key.split(".")[1] not in listed.stdout
    # Grants: the key sees only echo-1.
    models = httpx.get(gateway.url + "/v1/models", headers=_auth(key)).json()["data"]
    assert [m["id"] for m in models] == ["echo-1"]
    revoked = run_cli("keys", "revoke", key.split(".")[0], "--config", config, env=BASE_ENV)
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if httpx.get(gateway.url + "/v1/models", headers=_auth(key)).status_code == 401:
            break
        time.sleep(0.1)
    else:
        pytest.fail("revoked key still accepted after 5 s")
    assert httpx.get(gateway.url + "/v1/models", headers=_auth()).status_code == 200


def test_secrets_never_logged(gateway) -> None:
    httpx.get(gateway.url + "/v1/models", headers=_auth())
    httpx.get(gateway.url + "/v1/models", headers=_auth(SEED_KEY[:-3] + "xyz"))
    logs = gateway.logs()
    assert SEED_KEY.split(".")[1] not in logs
    assert "upstream-token" not in logs
    assert "correct-horse" not in logs
