"""What every provider offers the router: open one upstream call, then read or stream it."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway_app.providers.http1 import PoolStats


class UpstreamError(Exception):
    """One attempt failed. ``retryable`` failures move on to the next route."""

    def __init__(self, provider: str, kind: str, message: str, status: int | None = None, body: bytes = b""):
        self.provider = provider
        self.kind = kind  # "connect", "timeout", "http", "auth", "busy" (every pooled connection taken)
        self.status = status
        self.body = body
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        # A rejected credential is this provider's problem: another route may still serve.
        if self.kind in ("connect", "timeout", "auth", "busy"):
            return True
        return self.status is not None and (self.status == 429 or self.status >= 500)


class UpstreamCall(Protocol):
    """A successful (2xx) upstream response whose body has not been read yet."""

    status: int
    content_type: str

    async def read(self, deadline: float = math.inf) -> bytes:
        """The whole body, complete by ``deadline`` (event-loop time) or an error."""
        ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class Provider(Protocol):
    name: str

    async def open(self, operation: str, body: bytes, timeout: float) -> UpstreamCall:
        """Send ``body`` (already carrying the upstream model) and wait for the response head."""
        ...

    def pool_stats(self) -> PoolStats | None:
        """Connection pool counters (None for a provider without a pool)."""
        ...

    async def close(self) -> None: ...
