"""Vertex AI provider: service-account JWT exchanged at a real local token endpoint, then the upstream.

The fake token endpoint verifies the RS256 signature with the public half of a
key generated here, like Google's token endpoint does.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway_app.config import ConfigError, ProviderSettings, parse_settings
from gateway_app.providers.base import UpstreamError
from gateway_app.providers.vertex import SCOPE, build_vertex_provider, vertex_base_url
from tests.conftest import SEED_KEY, base_config
from tests.support.processes import free_port

MODEL = "google/gemini-2.0-flash"


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenServer:
    """A loopback OAuth token endpoint that checks the JWT bearer assertion."""

    def __init__(self, public_key: rsa.RSAPublicKey, expires_in: int = 3600):
        self.public_key = public_key
        self.expires_in = expires_in
        self.issued = 0
        self.claims: dict = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/token"
        self._runner: web.AppRunner | None = None

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        header, claims, signature = str(form["assertion"]).split(".")
        try:
            self.public_key.verify(
                _unb64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return web.json_response({"error": "invalid_grant"}, status=401)
        self.claims = json.loads(_unb64(claims))
        await asyncio.sleep(0.05)  # long enough for concurrent callers to pile up
        self.issued += 1
        return web.json_response({"access_token": f"tok-{self.issued}", "expires_in": self.expires_in})

    async def __aenter__(self) -> TokenServer:
        app = web.Application()
        app.router.add_post("/token", self.token)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


def _credentials(tmp_path: Path, token_uri: str) -> tuple[Path, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path = tmp_path / "sa.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "demo",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "gateway@demo.iam.gserviceaccount.com",
                "token_uri": token_uri,
            }
        )
    )
    return path, key


def _settings(credentials: Path, base_url: str) -> ProviderSettings:
    settings = ProviderSettings(
        name="vertex",
        type="gcp_vertex",
        project="demo",
        location="europe-west4",
        base_url=base_url,
        credentials_file=f"literal.{credentials}",
        timeout_seconds=5,
    )
    assert settings.credentials_file is not None
    settings.credentials_file.resolve()
    return settings


def _chat_body() -> bytes:
    return orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})


def test_default_base_url_is_vertex_openai_endpoint() -> None:
    assert vertex_base_url("demo", "europe-west4") == (
        "https://europe-west4-aiplatform.googleapis.com/v1/projects/demo/locations/europe-west4/endpoints/openapi"
    )


async def test_token_is_fetched_once_for_concurrent_calls_and_refreshed_before_expiry(
    tmp_path, launcher
) -> None:
    upstream = launcher.upstream()
    async with TokenServer(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ) as server:
        path, key = _credentials(tmp_path, server.url)
        server.public_key = key.public_key()
        server.expires_in = 301  # inside the refresh margin after a second
        provider = build_vertex_provider(_settings(path, upstream.url))
        try:
            calls = await asyncio.gather(*(provider.open("chat", _chat_body(), 5) for _ in range(8)))
            for call in calls:
                assert orjson.loads(await call.read())["model"] == MODEL
            assert server.issued == 1
            assert upstream.stats()["authorization"] == "Bearer tok-1"
            assert server.claims["scope"] == SCOPE and server.claims["aud"] == server.url
            await asyncio.sleep(1.1)
            await (await provider.open("chat", _chat_body(), 5)).read()
            assert server.issued == 2
            assert upstream.stats()["authorization"] == "Bearer tok-2"
        finally:
            await provider.close()


async def test_a_rejected_assertion_is_an_auth_error(tmp_path, launcher) -> None:
    upstream = launcher.upstream()
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    async with TokenServer(stranger) as server:
        path, _ = _credentials(tmp_path, server.url)
        provider = build_vertex_provider(_settings(path, upstream.url))
        try:
            with pytest.raises(UpstreamError) as caught:
                await provider.open("chat", _chat_body(), 5)
        finally:
            await provider.close()
    assert caught.value.kind == "auth" and caught.value.retryable
    assert "HTTP 401" in str(caught.value) and "gateway@demo" in str(caught.value)
    assert upstream.stats()["requests"] == 0


async def test_chat_through_a_gateway_process(tmp_path, db_url, launcher) -> None:
    upstream = launcher.upstream()
    async with TokenServer(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    ) as server:
        path, key = _credentials(tmp_path, server.url)
        server.public_key = key.public_key()
        config = base_config(db_url)
        config["providers"].append(
            {
                "name": "vertex",
                "type": "gcp_vertex",
                "project": "demo",
                "location": "europe-west4",
                "base_url": upstream.url,
                "credentials_file": f"literal.{path}",
                "pricing_provider_id": "google_vertex",
            }
        )
        config["models"].append(
            {"name": "gemini", "routes": [{"provider": "vertex", "upstream_model": MODEL}]}
        )
        gateway = await asyncio.to_thread(launcher.gateway, config)
        async with httpx.AsyncClient(timeout=15) as client:
            response = await client.post(
                gateway.url + "/v1/chat/completions",
                json={"model": "gemini", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {SEED_KEY}"},
            )
        assert response.status_code == 200, response.text
        assert upstream.stats()["model"] == MODEL
        assert upstream.stats()["authorization"] == "Bearer tok-1"


def test_config_says_what_vertex_needs() -> None:
    data = base_config("sqlite:///x.db")
    data["providers"].append({"name": "vx", "type": "gcp_vertex", "project": "p", "location": "us-central1"})
    data["models"].append(
        {"name": "gem", "routes": [{"provider": "vx", "upstream_model": "gemini-2.0-flash"}]}
    )
    with pytest.raises(ConfigError) as caught:
        parse_settings(data)
    problems = dict(caught.value.problems)
    assert "<publisher>/<model_id>" in problems["models[1].routes[0].upstream_model"]
    assert "credentials_file" in problems["providers[1].credentials_file"]
