"""Any OpenAI-compatible upstream (OpenAI, vLLM, Ollama, LiteLLM, Vertex's OpenAI endpoint)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

from gateway_app.config import ProviderSettings
from gateway_app.providers.base import UpstreamError
from gateway_app.providers.http1 import (
    HTTP1Client,
    HTTP1Error,
    Response,
    parse_url,
    request_head,
    with_body,
)

_PATHS = {"chat": "/chat/completions", "embeddings": "/embeddings"}


class OpenAICompatProvider:
    def __init__(
        self,
        settings: ProviderSettings,
        base_url: str | None = None,
        token: Callable[[], Awaitable[str]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ):
        self.name = settings.name
        self._settings = settings
        self._token = token
        try:
            target = parse_url((base_url or settings.base_url or "").rstrip("/"))
            headers = [("Content-Type", "application/json")]
            if token is None and settings.api_key:
                headers.append(("Authorization", f"Bearer {settings.api_key.value}"))
            # Everything but the length (and a fetched token) is fixed per operation: built once.
            self._heads = {
                operation: request_head(target.path.rstrip("/") + path, target.host_header, headers)
                for operation, path in _PATHS.items()
            }
        except ValueError as exc:
            raise ValueError(f"provider {self.name}: base_url or api_key unusable: {exc}") from None
        self._origin = target.origin
        self._client = HTTP1Client(
            max_connections=settings.max_connections,
            connect_timeout=settings.connect_timeout_seconds,
            ssl_context=ssl_context,
        )

    async def open(self, operation: str, body: bytes, timeout: float) -> Response:
        head = self._heads[operation]
        # The timeout bounds connect + response head (+ an error's body); a started stream is not cut by it.
        try:
            async with asyncio.timeout(min(timeout, self._settings.timeout_seconds)):
                if self._token is not None:
                    head += b"Authorization: Bearer %s\r\n" % (await self._token()).encode()
                response = await self._client.request(self._origin, with_body(head, body))
                if response.status < 400:
                    return response
                error_body = await response.read()
        except TimeoutError:
            raise UpstreamError(
                self.name, "timeout", f"provider {self.name} did not answer in time"
            ) from None
        except HTTP1Error as exc:
            raise UpstreamError(
                self.name, "connect", f"provider {self.name} unreachable ({exc.reason})"
            ) from None
        kind = "auth" if response.status in (401, 403) else "http"
        raise UpstreamError(
            self.name,
            kind,
            f"provider {self.name} answered HTTP {response.status}",
            response.status,
            error_body,
        )

    async def close(self) -> None:
        await self._client.close()
