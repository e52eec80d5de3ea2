"""Connections to the gateway's Redis (rate limits, response cache), imported on first use.

redis-py pulls in OpenTelemetry's SDK when it is imported (``redis.observability``): about
0.15 s of CPU at every gateway start. Most gateways have no Redis, so the
import waits until one is configured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis


def connect(url: str, timeout_seconds: float) -> Redis:
    """A client whose every connect and read waits at most ``timeout_seconds`` (no I/O here)."""
    from redis.asyncio import Redis

    return Redis.from_url(url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds)


def errors() -> tuple[type[Exception], ...]:
    """What a failed or unreachable Redis raises, for ``except``."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)
