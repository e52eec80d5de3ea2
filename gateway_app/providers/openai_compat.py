"""Any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, LiteLLM, Vertex's OpenAI endpoint)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp

from gateway_app.config import ProviderSettings
from gateway_app.providers.base import UpstreamError

_PATHS = {"chat": "/chat/completions", "embeddings": "/embeddings"}


class _AiohttpCall:
    __slots__ = ("_resp", "content_type", "status")

    def __init__(self, resp: aiohttp.ClientResponse):
        self._resp = resp
        self.status = resp.status
        self.content_type = resp.headers.get("Content-Type", "application/json")

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        finally:
            self._resp.release()

    def release(self) -> None:
        self._resp.release()


class OpenAICompatProvider:
    def __init__(
        self,
        settings: ProviderSettings,
        base_url: str | None = None,
        token: Callable[[], Awaitable[str]] | None = None,
    ):
        self.name = settings.name
        self._settings = settings
        self._base_url = (base_url or settings.base_url or "").rstrip("/")
        self._token = token
        self._static_auth = f"Bearer {settings.api_key.value}" if settings.api_key else None
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily inside the running loop; one pooled session per provider.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._settings.max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            self._session = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent",), auto_decompress=True
            )
        return self._session

    async def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {await self._token()}"
        elif self._static_auth:
            headers["Authorization"] = self._static_auth
        return headers

    async def open(self, operation: str, body: bytes, timeout: float) -> _AiohttpCall:
        url = self._base_url + _PATHS[operation]
        # The timeout bounds connect + response head; a started stream is not cut by it.
        client_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(self._settings.connect_timeout_seconds, timeout)
        )
        try:
            async with asyncio.timeout(min(timeout, self._settings.timeout_seconds)):
                resp = await self._client().post(
                    url, data=body, headers=await self._headers(), timeout=client_timeout
                )
        except TimeoutError:
            raise UpstreamError(
                self.name, "timeout", f"provider {self.name} did not answer in time"
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                self.name, "connect", f"provider {self.name} unreachable ({exc.__class__.__name__})"
            ) from None
        if resp.status >= 400:
            body_bytes = await resp.read()
            resp.release()
            kind = "auth" if resp.status in (401, 403) else "http"
            raise UpstreamError(
                self.name, kind, f"provider {self.name} answered HTTP {resp.status}", resp.status, body_bytes
            )
        return _AiohttpCall(resp)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
