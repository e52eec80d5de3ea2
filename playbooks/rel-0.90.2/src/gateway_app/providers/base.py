"""What every provider offers the router: open one upstream call, then read or stream it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol


class UpstreamError(Exception):
    """One attempt failed. ``retryable`` failures move on to the next route."""

    def __init__(self, provider: str, kind: str, message: str, status: int | None = None, body: bytes = b""):
        self.provider = provider
        self.kind = kind  # "connect", "timeout", "http", "auth"
        self.status = status
        self.body = body
        super().__init__(message)

    @property
    def retryable(self) -> bool:
        # A rejected credential is this provider's problem: another route may still serve.
        if self.kind in ("connect", "timeout", "auth"):
            return True
        return self.status is not None and (self.status == 429 or self.status >= 500)


class UpstreamCall(Protocol):
    """A successful (2xx) upstream response whose body has not been read yet."""

    status: int
    content_type: str

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class Provider(Protocol):
    name: str

    async def open(self, operation: str, body: bytes, timeout: float) -> UpstreamCall:
        """Send ``body`` (already carrying the upstream model) and wait for the response head."""
        ...

    async def close(self) -> None: ...
