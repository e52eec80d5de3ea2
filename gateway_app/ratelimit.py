"""Per-key request rate limits (requests per minute).

Fixed one-minute windows aligned to the clock, counted per API key: in this
process by default, or in Redis (``rate_limits.redis_url``) so that all
replicas share one count. If Redis cannot be reached the request is let
through and the error counted: a limiter outage must not become an API outage.
"""

from __future__ import annotations

import logging
import math
import time

from gateway_app import redis_client
from gateway_app.config import RateLimitSettings
from gateway_app.http import HTTPError
from gateway_app.keys import KeyIdentity

log = logging.getLogger("gateway.ratelimit")

_WINDOW_SECONDS = 60
_REDIS_TIMEOUT_SECONDS = 0.25
_WARN_EVERY_SECONDS = 30.0


def _exceeded(limit: int, now: float) -> HTTPError:
    retry_after = max(1, math.ceil(_WINDOW_SECONDS - now % _WINDOW_SECONDS))
    return HTTPError(
        429,
        f"rate limit of {limit} requests per minute exceeded for this key; retry after {retry_after}s",
        "rate_limit_exceeded",
        "rate_limit_error",
        headers=[(b"retry-after", str(retry_after).encode())],
    )


class LocalRateLimiter:
    """Counts in this process only (one replica, or limits per replica)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.refused = 0
        self.errors = 0
        self._counts: dict[int, tuple[int, int]] = {}  # key id -> (window, count)

    async def check(self, identity: KeyIdentity) -> None:
        now = time.time()
        window = int(now // _WINDOW_SECONDS)
        seen_window, count = self._counts.get(identity.key_id, (window, 0))
        count = count + 1 if seen_window == window else 1
        self._counts[identity.key_id] = (window, count)
        if count > self.limit:
            self.refused += 1
            raise _exceeded(self.limit, now)

    async def close(self) -> None:
        self._counts.clear()


class RedisRateLimiter:
    """One counter per key and minute in Redis, shared by every replica."""

    def __init__(self, limit: int, url: str):
        self.limit = limit
        self.refused = 0
        self.errors = 0
        self._last_warning = 0.0
        self._redis = redis_client.connect(url, _REDIS_TIMEOUT_SECONDS)
        self._errors = redis_client.errors()

    async def check(self, identity: KeyIdentity) -> None:
        now = time.time()
        name = f"gateway:ratelimit:{identity.public_id}:{int(now // _WINDOW_SECONDS)}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(name)
                pipe.expire(name, _WINDOW_SECONDS * 2)
                count, _ = await pipe.execute()
        except self._errors as exc:
            self.errors += 1
            if now - self._last_warning > _WARN_EVERY_SECONDS:
                self._last_warning = now
                log.warning(
                    "rate limiter store unreachable, letting requests through: %s", type(exc).__name__
                )
            return
        if count > self.limit:
            self.refused += 1
            raise _exceeded(self.limit, now)

    async def close(self) -> None:
        await self._redis.aclose()


RateLimiter = LocalRateLimiter | RedisRateLimiter


def build_rate_limiter(settings: RateLimitSettings) -> RateLimiter | None:
    if settings.requests_per_minute is None:
        return None
    if settings.redis_url is not None:
        return RedisRateLimiter(settings.requests_per_minute, settings.redis_url.value)
    return LocalRateLimiter(settings.requests_per_minute)
