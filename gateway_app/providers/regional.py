"""One provider served from several regional base URLs: the healthy, faster one first.

Each endpoint has its own circuit breaker (resilience.RouteHealth, keyed
``<provider>@<region>``) and a moving average of its time to response head,
measured on real traffic (successful attempts only: a refused connection is fast
but says nothing about serving). A call goes to the endpoint with the lowest
average, an endpoint not measured yet counting as fastest so that each gets
measured; one call in ``EXPLORE_EVERY`` goes to the next endpoint in turn
instead, so an endpoint that got faster is noticed. A retryable failure falls
over to the other endpoints (in config order) within the same call; only when
every endpoint failed or has an open circuit does the router move on to the
next route.

The request path takes no lock and does O(endpoints) work: one pass for the
fastest, plain attribute updates after the attempt (one event loop per process).
"""

from __future__ import annotations

import asyncio
import time

from gateway_app.config import EndpointSettings, ProviderSettings, ResilienceSettings
from gateway_app.providers.base import UpstreamError
from gateway_app.providers.http1 import PoolStats, Response
from gateway_app.providers.openai_compat import OpenAICompatProvider
from gateway_app.resilience import RouteHealth

# Weight of the newest sample in an endpoint's moving average (~the last 10 calls count).
EWMA_SMOOTHING = 0.2
# One call in this many tries the next endpoint in turn first, so one that got faster is noticed
# (with two endpoints, 1 call in 100 goes to the slower one).
EXPLORE_EVERY = 50


class Endpoint:
    """One regional base URL: its client, breaker and latency as this replica measured them."""

    __slots__ = ("base_url", "ewma_seconds", "health", "provider", "region")

    def __init__(self, provider: OpenAICompatProvider, settings: EndpointSettings, health: RouteHealth):
        self.provider = provider
        self.region = settings.region
        self.base_url = settings.base_url
        # Breaker, success/failure counts and the time-to-head histogram of every attempt.
        self.health = health
        self.ewma_seconds: float | None = None  # successful attempts only; None: not measured yet

    def succeeded(self, seconds: float) -> None:
        self.health.succeeded(seconds)
        previous = self.ewma_seconds
        self.ewma_seconds = seconds if previous is None else previous + EWMA_SMOOTHING * (seconds - previous)


class RegionalProvider:
    """An openai_compat provider with ``endpoints``: the Provider protocol over several origins."""

    def __init__(self, settings: ProviderSettings, resilience: ResilienceSettings):
        assert settings.endpoints, "RegionalProvider needs endpoints"
        self.name = settings.name
        self.endpoints = [
            Endpoint(
                OpenAICompatProvider(settings, base_url=endpoint.base_url),
                endpoint,
                RouteHealth(f"{settings.name}@{endpoint.region}", resilience),
            )
            for endpoint in settings.endpoints
        ]
        self._calls = 0

    def order(self) -> list[Endpoint]:
        """Endpoints in the order this call tries them: fastest (or unmeasured) first, then config order."""
        endpoints = self.endpoints
        if len(endpoints) == 1:
            return endpoints
        self._calls += 1
        if self._calls % EXPLORE_EVERY == 0:
            first = endpoints[(self._calls // EXPLORE_EVERY) % len(endpoints)]
        else:
            first = endpoints[0]
            best = -1.0 if first.ewma_seconds is None else first.ewma_seconds
            for endpoint in endpoints:
                ewma = -1.0 if endpoint.ewma_seconds is None else endpoint.ewma_seconds
                if ewma < best:
                    first, best = endpoint, ewma
        return [first, *(e for e in endpoints if e is not first)]

    async def open(self, operation: str, body: bytes, timeout: float) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: UpstreamError | None = None
        tried: list[str] = []
        for endpoint in self.order():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if not endpoint.health.allow(time.monotonic()):
                continue  # open circuit: not waited on
            tried.append(endpoint.region)
            started = time.perf_counter()
            try:
                call = await endpoint.provider.open(operation, body, remaining)
            except UpstreamError as exc:
                elapsed = time.perf_counter() - started
                if exc.kind == "busy":  # this gateway's pool limit, not the endpoint's failure
                    last_error = exc
                    continue
                if not exc.retryable:  # the endpoint is up and refused the request itself
                    endpoint.health.succeeded(elapsed)
                    raise
                endpoint.health.failed(elapsed, str(exc))
                last_error = exc
                continue
            endpoint.succeeded(time.perf_counter() - started)
            return call
        if last_error is not None:
            raise UpstreamError(
                self.name,
                last_error.kind,
                f"{last_error} (regions tried: {', '.join(tried) or 'none'})",
                last_error.status,
                last_error.body,
            )
        if not tried and deadline > loop.time():
            raise UpstreamError(
                self.name,
                "connect",
                f"provider {self.name}: every endpoint has an open circuit "
                f"({', '.join(e.region for e in self.endpoints)})",
            )
        raise UpstreamError(self.name, "timeout", f"provider {self.name} did not answer in time")

    def pool_stats(self) -> PoolStats:
        total = PoolStats()
        for endpoint in self.endpoints:
            stats = endpoint.provider.pool_stats()
            total.add(stats, stats.in_use)
        return total

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.provider.close()
