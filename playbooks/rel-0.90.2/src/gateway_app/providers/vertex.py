"""Vertex AI through its OpenAI-compatible endpoint, authenticated as a service account.

The service-account JSON (``credentials_file``: a secret reference whose value
is the file's path) signs a JWT (RS256) that is exchanged at the credentials'
``token_uri`` for an access token. The token is cached and refreshed a few
minutes before it expires; concurrent requests share one refresh.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway_app.config import ProviderSettings
from gateway_app.providers import http1
from gateway_app.providers.base import UpstreamError
from gateway_app.providers.openai_compat import OpenAICompatProvider

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_JWT_LIFETIME_SECONDS = 3600
_REFRESH_MARGIN_SECONDS = 300
_TOKEN_TIMEOUT_SECONDS = 10.0


def vertex_base_url(project: str, location: str) -> str:
    host = "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
    return f"https://{host}/v1/projects/{project}/locations/{location}/endpoints/openapi"


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class ServiceAccountCredentials:
    def __init__(self, info: dict[str, Any], source: str):
        missing = [f for f in ("client_email", "private_key", "token_uri") if not info.get(f)]
        if missing:
            raise ValueError(f"service-account file {source} lacks {', '.join(missing)}")
        self.email: str = info["client_email"]
        self.token_uri: str = info["token_uri"]
        try:
            http1.parse_url(self.token_uri)
        except ValueError as exc:
            raise ValueError(f"service-account file {source}: token_uri {exc}") from None
        self.key_id: str | None = info.get("private_key_id")
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"service-account file {source}: private_key is not an RSA key")
        self._key = key

    @classmethod
    def from_secret(cls, value: str) -> ServiceAccountCredentials:
        """``value`` is the JSON file's path, or the JSON itself (a ``file.PATH`` reference reads it)."""
        source = "(inline JSON)" if value.lstrip().startswith("{") else value
        try:
            info = orjson.loads(value if source == "(inline JSON)" else Path(value).read_bytes())
        except OSError as exc:
            raise ValueError(f"service-account file {source} cannot be read ({exc.strerror})") from None
        except orjson.JSONDecodeError:
            raise ValueError(f"service-account file {source} is not JSON") from None
        return cls(info, source)

    def assertion(self, now: int) -> str:
        header = {"alg": "RS256", "typ": "JWT", **({"kid": self.key_id} if self.key_id else {})}
        claims = {
            "iss": self.email,
            "sub": self.email,
            "aud": self.token_uri,
            "scope": SCOPE,
            "iat": now,
            "exp": now + _JWT_LIFETIME_SECONDS,
        }
        signing_input = _b64url(orjson.dumps(header)) + b"." + _b64url(orjson.dumps(claims))
        signature = self._key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return (signing_input + b"." + _b64url(signature)).decode()


class AccessTokenSource:
    """A cached OAuth access token; one refresh at a time, started before expiry."""

    def __init__(self, provider: str, credentials: ServiceAccountCredentials):
        self._provider = provider
        self._credentials = credentials
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return self._token is not None and time.time() < self._expires_at - _REFRESH_MARGIN_SECONDS

    async def __call__(self) -> str:
        if self._fresh():
            return self._token  # type: ignore[return-value]
        async with self._lock:  # single flight: waiters reuse the token the first caller fetched
            if not self._fresh():
                await self._refresh()
            return self._token  # type: ignore[return-value]

    async def _refresh(self) -> None:
        form = {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": self._credentials.assertion(int(time.time())),
        }
        try:
            status, body = await http1.post(
                self._credentials.token_uri,
                urlencode(form).encode(),
                "application/x-www-form-urlencoded",
                _TOKEN_TIMEOUT_SECONDS,
            )
        except (http1.HTTP1Error, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, http1.HTTP1Error) else "no answer in time"
            raise UpstreamError(
                self._provider, "auth", f"provider {self._provider}: token endpoint unreachable ({reason})"
            ) from None
        try:
            answer = orjson.loads(body) if status == 200 else {}
            token, lifetime = answer["access_token"], float(answer.get("expires_in", 3600))
            if not (isinstance(token, str) and token.isascii() and token.isprintable() and " " not in token):
                raise ValueError("not usable in an Authorization header")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise UpstreamError(
                self._provider,
                "auth",
                f"provider {self._provider}: token exchange for {self._credentials.email} failed "
                f"(HTTP {status}); check the service account and its key",
                status,
            ) from None
        self._token = token
        self._expires_at = time.time() + lifetime


def build_vertex_provider(settings: ProviderSettings) -> OpenAICompatProvider:
    if settings.credentials_file is None:
        raise ValueError(f"provider {settings.name}: gcp_vertex needs credentials_file")
    credentials = ServiceAccountCredentials.from_secret(settings.credentials_file.value)
    assert settings.project and settings.location  # enforced by config validation
    base_url = settings.base_url or vertex_base_url(settings.project, settings.location)
    token = AccessTokenSource(settings.name, credentials)
    return OpenAICompatProvider(settings, base_url=base_url, token=token)
