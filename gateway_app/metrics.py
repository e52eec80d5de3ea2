"""Prometheus metrics: cheap aggregation on the request path, families built at scrape time.

prometheus_client's labelled metrics take a lock and a label lookup per update.
The gateway runs one event loop per process, so the request path only bumps
plain ints in dicts and bucket arrays (no locks needed); ``/metrics`` turns them
into metric families when scraped. Every name starts with ``gateway_``.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway_app.config import GatewaySettings
from gateway_app.keys import KeyCache
from gateway_app.ratelimit import RateLimiter
from gateway_app.readiness import Readiness
from gateway_app.request_log import RequestLogWriter, RequestRecord
from gateway_app.response_cache import MemoryStore, ResponseCache
from gateway_app.storage import Database
from gateway_app.storage.sqlite import sqlite_path

if TYPE_CHECKING:
    # Both import this module at run time (resilience.py's Histogram): a real cycle.
    from gateway_app.providers import Provider
    from gateway_app.routing import Router

PREFIX = "gateway_"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
# LLM calls run from milliseconds (cache hits, embeddings) to minutes (long generations).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")


class Histogram:
    """A histogram updated from one event loop: one bisect and two adds per observation."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[str, int]]:
        cumulative, out = 0, []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            cumulative += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        return out


def status_class(status: int) -> str:
    return f"{status // 100}xx" if status else "none"


class RequestMetrics:
    """What the request path updates. Keys are tuples; label strings are built only at scrape."""

    def __init__(self) -> None:
        self.in_flight = 0
        # (operation, model, provider, upstream_model, status class) -> count
        self.requests: dict[tuple[str, str, str, str, str], int] = {}
        self.duration: dict[str, Histogram] = {}  # by model
        self.ttft: dict[str, Histogram] = {}  # by model, streams only
        self.tokens: dict[tuple[str, str], int] = {}  # (model, prompt|completion)
        self.cost_micros: dict[str, int] = {}  # by model

    def observe(self, record: RequestRecord, seconds: float) -> None:
        model = record.model or ""
        key = (
            record.operation,
            model,
            record.provider or "",
            record.upstream_model or "",
            status_class(record.status_code),
        )
        self.requests[key] = self.requests.get(key, 0) + 1
        if record.model is None:
            return
        histogram = self.duration.get(model)
        if histogram is None:
            histogram = self.duration[model] = Histogram(DURATION_BUCKETS)
        histogram.observe(seconds)
        if record.ttft_ms is not None:
            ttft = self.ttft.get(model)
            if ttft is None:
                ttft = self.ttft[model] = Histogram(TTFT_BUCKETS)
            ttft.observe(record.ttft_ms / 1000)

    def observe_usage(
        self, record: RequestRecord, prompt: int | None, completion: int | None, cost: int | None
    ) -> None:
        """Called by the request-log writer, off the request path, once usage is parsed."""
        model = record.model or ""
        if prompt:
            self.tokens[(model, "prompt")] = self.tokens.get((model, "prompt"), 0) + prompt
        if completion:
            self.tokens[(model, "completion")] = self.tokens.get((model, "completion"), 0) + completion
        if cost:
            self.cost_micros[model] = self.cost_micros.get(model, 0) + cost


def _histogram(name: str, doc: str, label: str, series: dict[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, doc, labels=[label])
    for value, h in series.items():
        family.add_metric([value], h.buckets(), h.sum)
    return family


def _memory_limit() -> int | None:
    try:
        text = _CGROUP_MEMORY_MAX.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class GatewayCollector(Collector):
    """Builds every gateway_* family from the live parts of one started gateway process.

    ``limiter`` and ``response_cache`` are None when the config has none: their families are left out.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        metrics: RequestMetrics,
        *,
        db: Database,
        providers: dict[str, Provider],
        router: Router,
        keys: KeyCache,
        writer: RequestLogWriter,
        readiness: Readiness,
        limiter: RateLimiter | None,
        response_cache: ResponseCache | None,
    ):
        self._settings = settings
        self._metrics = metrics
        self._db = db
        self._providers = providers
        self._router = router
        self._keys = keys
        self._writer = writer
        self._readiness = readiness
        self._limiter = limiter
        self._response_cache = response_cache

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        requests = CounterMetricFamily(
            PREFIX + "requests",
            "API requests answered, by operation, model, serving route and status class.",
            labels=["operation", "model", "provider", "upstream_model", "status_class"],
        )
        for labels, count in m.requests.items():
            requests.add_metric(list(labels), count)
        yield requests
        yield _histogram(
            "request_duration_seconds", "Whole request duration, streams included.", "model", m.duration
        )
        yield _histogram("time_to_first_token_seconds", "Time to the first streamed chunk.", "model", m.ttft)
        yield GaugeMetricFamily(PREFIX + "requests_in_flight", "API requests being served.", m.in_flight)
        tokens = CounterMetricFamily(
            PREFIX + "tokens", "Tokens used, by model and kind.", labels=["model", "kind"]
        )
        for (model, kind), count in m.tokens.items():
            tokens.add_metric([model, kind], count)
        yield tokens
        cost = CounterMetricFamily(PREFIX + "cost_usd", "Priced usage in USD, by model.", labels=["model"])
        for model, micros in m.cost_micros.items():
            cost.add_metric([model], micros / 1_000_000)
        yield cost
        if self._limiter is not None:
            yield CounterMetricFamily(
                PREFIX + "rate_limited_requests",
                "Requests refused by the per-key rate limit.",
                self._limiter.refused,
            )
            yield CounterMetricFamily(
                PREFIX + "rate_limiter_errors",
                "Checks skipped because Redis was unreachable.",
                self._limiter.errors,
            )
        if self._response_cache is not None:
            yield from self._cache_families(self._response_cache)
        lookups = CounterMetricFamily(
            PREFIX + "key_lookups",
            "Lookups of API key ids not in memory, by outcome "
            "(limited, remembered, joined: no query of their own).",
            labels=["outcome"],
        )
        for outcome, count in self._keys.lookups.items():
            lookups.add_metric([outcome], count)
        yield lookups
        yield from self._routes()
        yield from self._upstream_pools()
        yield from self._endpoints()
        yield from self._request_log()
        yield from self._db_pool()
        yield from self._host()

    def _request_log(self) -> Iterator[Metric]:
        w = self._writer
        yield GaugeMetricFamily(PREFIX + "request_log_queue_depth", "Records waiting to be written.", w.depth)
        yield CounterMetricFamily(
            PREFIX + "request_log_dropped", "Records dropped because the queue was full.", w.dropped
        )
        yield CounterMetricFamily(PREFIX + "request_log_written", "Records written.", w.written)
        yield CounterMetricFamily(
            PREFIX + "request_log_write_errors",
            "Ledger rows lost: neither the database nor the spool took them.",
            w.write_errors,
        )
        yield GaugeMetricFamily(
            PREFIX + "request_log_queue_bytes", "Bytes held by queued records.", w.queued_bytes
        )
        yield CounterMetricFamily(
            PREFIX + "request_log_shed",
            "Request-log details not stored because the database was unavailable (ledger kept).",
            w.shed,
        )
        yield CounterMetricFamily(
            PREFIX + "request_log_encode_errors",
            "Request-log details that could not be encoded or stored, dropped one by one.",
            w.encode_errors,
        )
        spool = w.spool
        yield CounterMetricFamily(
            PREFIX + "ledger_spooled", "Ledger rows written to the local spool.", w.spooled
        )
        yield CounterMetricFamily(
            PREFIX + "ledger_replayed", "Spooled ledger rows replayed into the database.", w.replayed
        )
        yield GaugeMetricFamily(
            PREFIX + "ledger_spool_rows", "Ledger rows in the spool waiting for the database.", spool.rows
        )
        yield GaugeMetricFamily(PREFIX + "ledger_spool_bytes", "Size of the ledger spool.", spool.size)
        yield GaugeMetricFamily(
            PREFIX + "ledger_spool_max_bytes", "Capacity of the ledger spool.", spool.max_bytes
        )
        yield CounterMetricFamily(
            PREFIX + "ledger_spool_full",
            "Ledger rows the spool refused (full or failing disk); they stay queued in memory.",
            spool.full_refusals,
        )
        yield GaugeMetricFamily(
            PREFIX + "database_reachable",
            "1 if the last readiness check and ledger write reached the database, else 0.",
            int(self._readiness.database_reachable and w.database_available),
        )

    def _db_pool(self) -> Iterator[Metric]:
        stats = self._db.pool_stats()
        pool_max = self._settings.database.pool_max if self._db.backend == "postgres" else stats["size"]
        yield GaugeMetricFamily(PREFIX + "db_pool_connections_max", "Pool capacity.", pool_max)
        yield GaugeMetricFamily(PREFIX + "db_pool_connections_open", "Open pool connections.", stats["size"])
        yield GaugeMetricFamily(
            PREFIX + "db_pool_connections_in_use",
            "Pool connections checked out.",
            stats["size"] - stats["idle"],
        )

    def _routes(self) -> Iterator[Metric]:
        labels = ["route", "provider"]
        state = GaugeMetricFamily(
            PREFIX + "circuit_state", "Circuit of a route: 0 closed, 1 half-open, 2 open.", labels=labels
        )
        enabled = GaugeMetricFamily(
            PREFIX + "route_enabled",
            "1 when the route may receive traffic (config and admin).",
            labels=labels,
        )
        attempts = CounterMetricFamily(
            PREFIX + "upstream_attempts", "Upstream attempts by outcome.", labels=[*labels, "outcome"]
        )
        latency = HistogramMetricFamily(
            PREFIX + "upstream_latency_seconds", "Time to the upstream response head.", labels=labels
        )
        for route in self._router.routes_by_key.values():
            health = route.health
            values = [route.key, route.provider_name]
            state.add_metric(values, health.state_code)
            enabled.add_metric(values, 1 if self._router.eligible(route) else 0)
            attempts.add_metric([*values, "success"], health.successes)
            attempts.add_metric([*values, "failure"], health.failures_total)
            latency.add_metric(values, health.latency.buckets(), health.latency.sum)
        yield from (state, enabled, attempts, latency)

    def _cache_families(self, cache: ResponseCache) -> Iterator[Metric]:
        hits = CounterMetricFamily(
            PREFIX + "cache_hits", "Answers served from the response cache.", labels=["model"]
        )
        misses = CounterMetricFamily(
            PREFIX + "cache_misses", "Cacheable requests not found in the response cache.", labels=["model"]
        )
        bypassed = CounterMetricFamily(
            PREFIX + "cache_bypassed",
            "Requests of a cached model that were not cacheable, by reason "
            "(stream, sampled, no_store, unkeyable).",
            labels=["model", "reason"],
        )
        stores = CounterMetricFamily(
            PREFIX + "cache_stores", "Answers stored in the response cache.", labels=["model"]
        )
        evictions = CounterMetricFamily(
            PREFIX + "cache_evictions",
            "Entries pushed out by the in-process store's bounds (least recently used first).",
            labels=["model"],
        )
        expired = CounterMetricFamily(
            PREFIX + "cache_expired", "Entries dropped past their TTL (in-process store).", labels=["model"]
        )
        too_large = CounterMetricFamily(
            PREFIX + "cache_too_large", "Answers over max_entry_bytes: served, not stored.", labels=["model"]
        )
        for model, stats in cache.stats.items():
            hits.add_metric([model], stats.hits)
            misses.add_metric([model], stats.misses)
            for reason, count in stats.bypassed.items():
                bypassed.add_metric([model, reason], count)
            stores.add_metric([model], stats.stores)
            evictions.add_metric([model], stats.evictions)
            expired.add_metric([model], stats.expired)
            too_large.add_metric([model], stats.too_large)
        yield from (hits, misses, bypassed, stores, evictions, expired, too_large)
        yield CounterMetricFamily(
            PREFIX + "cache_errors",
            "Response-cache lookups and stores that did not reach Redis (each one a miss, never a failure).",
            cache.store.errors + cache.pending_stores_dropped,
        )
        if isinstance(cache.store, MemoryStore):
            yield GaugeMetricFamily(
                PREFIX + "cache_entries", "Entries in the in-process store.", cache.store.entries
            )
            yield GaugeMetricFamily(
                PREFIX + "cache_bytes", "Bytes held by the in-process store.", cache.store.bytes
            )

    def _upstream_pools(self) -> Iterator[Metric]:
        labels = ["provider"]
        in_use = GaugeMetricFamily(
            PREFIX + "upstream_connections_in_use", "Upstream connections taken or opening.", labels=labels
        )
        limit = GaugeMetricFamily(
            PREFIX + "upstream_connections_max", "Upstream connection cap per origin.", labels=labels
        )
        waits = CounterMetricFamily(
            PREFIX + "upstream_pool_waits",
            "Requests that found every upstream connection busy, by outcome "
            "(queued, timeout after pool_timeout_seconds, rejected with the wait queue full).",
            labels=[*labels, "outcome"],
        )
        idle = CounterMetricFamily(
            PREFIX + "upstream_idle_timeouts",
            "Upstream responses cut after read_idle_timeout_seconds of silence.",
            labels=labels,
        )
        for name, provider in self._providers.items():
            stats = provider.pool_stats()
            if stats is None:
                continue
            in_use.add_metric([name], stats.in_use)
            limit.add_metric([name], self._settings.provider(name).max_connections)
            waits.add_metric([name, "queued"], stats.waits)
            waits.add_metric([name, "timeout"], stats.wait_timeouts)
            waits.add_metric([name, "rejected"], stats.wait_rejections)
            idle.add_metric([name], stats.idle_timeouts)
        yield from (in_use, limit, waits, idle)

    def _endpoints(self) -> Iterator[Metric]:
        """Regional endpoints of providers that list them (providers/regional.py), by region."""
        labels = ["provider", "region"]
        latency = HistogramMetricFamily(
            PREFIX + "upstream_endpoint_latency_seconds",
            "Time to the response head of one regional endpoint, every attempt.",
            labels=labels,
        )
        ewma = GaugeMetricFamily(
            PREFIX + "upstream_endpoint_ewma_seconds",
            "Moving average of successful attempts' time to head: the fastest endpoint is tried first.",
            labels=labels,
        )
        state = GaugeMetricFamily(
            PREFIX + "upstream_endpoint_circuit_state",
            "Circuit of a regional endpoint: 0 closed, 1 half-open, 2 open.",
            labels=labels,
        )
        attempts = CounterMetricFamily(
            PREFIX + "upstream_endpoint_attempts",
            "Attempts on a regional endpoint by outcome.",
            labels=[*labels, "outcome"],
        )
        for name, provider in self._providers.items():
            for endpoint in getattr(provider, "endpoints", ()):
                values = [name, endpoint.region]
                health = endpoint.health
                latency.add_metric(values, health.latency.buckets(), health.latency.sum)
                if endpoint.ewma_seconds is not None:
                    ewma.add_metric(values, endpoint.ewma_seconds)
                state.add_metric(values, health.state_code)
                attempts.add_metric([*values, "success"], health.successes)
                attempts.add_metric([*values, "failure"], health.failures_total)
        yield from (latency, ewma, state, attempts)

    def _host(self) -> Iterator[Metric]:
        limit = _memory_limit()
        if limit is not None:
            yield GaugeMetricFamily(PREFIX + "memory_limit_bytes", "The container's memory limit.", limit)
        if self._db.backend == "sqlite":
            path = sqlite_path(self._settings.database.url.value).parent
            try:
                fs = os.statvfs(path)
            except OSError:
                return
            size = GaugeMetricFamily(PREFIX + "disk_size_bytes", "Size of the data volume.", labels=["path"])
            free = GaugeMetricFamily(
                PREFIX + "disk_free_bytes", "Free space on the data volume.", labels=["path"]
            )
            size.add_metric([str(path)], fs.f_blocks * fs.f_frsize)
            free.add_metric([str(path)], fs.f_bavail * fs.f_frsize)
            yield from (size, free)


def build_registry(collector: GatewayCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    ProcessCollector(namespace="gateway", registry=registry)  # memory, CPU, open files
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
