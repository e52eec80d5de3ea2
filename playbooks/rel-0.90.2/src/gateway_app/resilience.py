"""Circuit breakers per route, and the admin overrides every replica applies.

Breakers live in each replica's memory, keyed by route: closed -> open after
``breaker_failure_threshold`` retryable failures within ``breaker_window_seconds``
-> after ``breaker_open_seconds`` one probe request is let through (half-open)
-> its success closes the circuit, its failure opens it again.

Admin decisions (disable/enable a provider or a route, reset circuits) are rows
in provider_overrides / route_overrides. Each replica reloads them every
``resilience.state_refresh_seconds``; a ``circuit_reset_at`` newer than the one
a replica last applied resets that route's breaker there.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import orjson

from gateway_app.background import Periodic
from gateway_app.clock import now_ms
from gateway_app.config import ResilienceSettings
from gateway_app.metrics import DURATION_BUCKETS, Histogram
from gateway_app.providers.base import UpstreamError
from gateway_app.storage import Database, Executor

if TYPE_CHECKING:
    from gateway_app.routing import Route, Router

log = logging.getLogger("gateway.resilience")

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
_STATE_CODES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
_LATENCY_SMOOTHING = 0.2  # weight of the newest sample in the moving average


class RouteHealth:
    """Breaker, last error and latency of one route in this replica."""

    __slots__ = (
        "_failures",
        "_opened_at",
        "_probe_at",
        "_settings",
        "failures_total",
        "key",
        "last_error",
        "latency",
        "latency_ms",
        "reset_seen_ms",
        "state",
        "successes",
    )

    def __init__(self, key: str, settings: ResilienceSettings):
        self.key = key
        self._settings = settings
        self.state = CLOSED
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._probe_at: float | None = None
        self.last_error: str | None = None
        self.latency_ms: float | None = None
        self.latency = Histogram(DURATION_BUCKETS)
        self.successes = 0
        self.failures_total = 0
        self.reset_seen_ms = 0

    @property
    def state_code(self) -> int:
        return _STATE_CODES[self.state]

    def allow(self, now: float) -> bool:
        """May a request go to this route now? Open circuits answer at once, without waiting."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if now - self._opened_at < self._settings.breaker_open_seconds:
                return False
            self._transition(HALF_OPEN, "probing after open period")
        # Half-open: one probe at a time; a probe that never reported back (client gone)
        # frees the slot after another open period.
        if self._probe_at is not None and now - self._probe_at < self._settings.breaker_open_seconds:
            return False
        self._probe_at = now
        return True

    def succeeded(self, seconds: float) -> None:
        self.successes += 1
        self._observe(seconds)
        if self.state != CLOSED:
            self._close("probe succeeded")

    def failed(self, seconds: float, error: str) -> None:
        self.failures_total += 1
        self.last_error = error
        self._observe(seconds)
        now = time.monotonic()
        if self.state == HALF_OPEN:
            self._open(now, f"probe failed: {error}")
            return
        window_start = now - self._settings.breaker_window_seconds
        failures = self._failures
        failures.append(now)
        while failures and failures[0] < window_start:
            failures.popleft()
        if self.state == CLOSED and len(failures) >= self._settings.breaker_failure_threshold:
            self._open(
                now, f"{len(failures)} failures in {self._settings.breaker_window_seconds:g}s: {error}"
            )

    def reset(self, reason: str) -> None:
        if self.state != CLOSED or self._failures:
            self._close(reason)

    def _observe(self, seconds: float) -> None:
        self.latency.observe(seconds)
        ms = seconds * 1000
        self.latency_ms = (
            ms if self.latency_ms is None else self.latency_ms + _LATENCY_SMOOTHING * (ms - self.latency_ms)
        )

    def _open(self, now: float, reason: str) -> None:
        self._opened_at = now
        self._probe_at = None
        self._failures.clear()
        self._transition(OPEN, reason)

    def _close(self, reason: str) -> None:
        self._probe_at = None
        self._failures.clear()
        self._transition(CLOSED, reason)

    def _transition(self, state: str, reason: str) -> None:
        if state != self.state:
            level = logging.WARNING if state == OPEN else logging.INFO
            log.log(level, "circuit %s -> %s", self.state, state, extra={"route": self.key, "reason": reason})
            self.state = state


class OverridesSync:
    """Applies provider/route overrides from the database to the router, every few seconds."""

    def __init__(self, db: Database, router: Router, settings: ResilienceSettings):
        self._db = db
        self._router = router
        # A failed refresh keeps the last known state; the next round tries again.
        self._refresher = Periodic("overrides-refresh", settings.state_refresh_seconds, self.refresh)

    async def start(self) -> None:
        await self.refresh()
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

    async def refresh(self) -> None:
        providers = {
            r["provider"]: bool(r["enabled"])
            for r in await self._db.fetch("SELECT provider, enabled FROM provider_overrides")
        }
        routes = {
            r["route_key"]: (r["enabled"], r["circuit_reset_at"])
            for r in await self._db.fetch("SELECT route_key, enabled, circuit_reset_at FROM route_overrides")
        }
        for route in self._router.routes_by_key.values():
            route.provider_admin_enabled = providers.get(route.provider_name)
            enabled, reset_at = routes.get(route.key, (None, None))
            route.admin_enabled = None if enabled is None else bool(enabled)
            if reset_at and reset_at > route.health.reset_seen_ms:
                route.health.reset_seen_ms = reset_at
                route.health.reset("admin reset")


# --- admin actions (persisted; every replica applies them on its next refresh) -----------


async def set_provider_enabled(db: Executor, provider: str, enabled: bool, by: str) -> None:
    await db.execute(
        "INSERT INTO provider_overrides (provider, enabled, updated_at, updated_by) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (provider) DO UPDATE SET enabled = excluded.enabled, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        provider,
        enabled,
        now_ms(),
        by,
    )


async def set_route_enabled(db: Executor, route_key: str, enabled: bool, by: str) -> None:
    await db.execute(
        "INSERT INTO route_overrides (route_key, enabled, updated_at, updated_by) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (route_key) DO UPDATE SET enabled = excluded.enabled, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        route_key,
        enabled,
        now_ms(),
        by,
    )


async def reset_circuits(db: Executor, route_keys: list[str], by: str) -> None:
    at = now_ms()
    for key in route_keys:
        await db.execute(
            "INSERT INTO route_overrides (route_key, circuit_reset_at, updated_at, updated_by) "
            "VALUES ($1, $2, $2, $3) ON CONFLICT (route_key) DO UPDATE SET "
            "circuit_reset_at = excluded.circuit_reset_at, updated_at = excluded.updated_at, "
            "updated_by = excluded.updated_by",
            key,
            at,
            by,
        )


async def probe_route(route: Route, operation: str, timeout: float) -> dict[str, Any]:
    """One live request to a route's upstream now: {"ok", "latency_ms", "error"} (breaker untouched)."""
    body: dict[str, Any] = {"model": route.upstream_model}
    if operation == "chat":
        body.update(messages=[{"role": "user", "content": "ping"}], max_tokens=1)
    else:
        body["input"] = "ping"
    started = time.perf_counter()
    try:
        call = await route.provider.open(operation, orjson.dumps(body), timeout)
        await call.read()
    except UpstreamError as exc:
        return {"ok": False, "latency_ms": _ms_since(started), "error": str(exc), "route": route.key}
    return {"ok": True, "latency_ms": _ms_since(started), "error": None, "route": route.key}


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
