"""Exact-match response cache: non-stream chat completions and embeddings, opt-in per model.

A model opts in with ``cache: {ttl_seconds: N}`` (``sampled: true`` to also cache chat
requests that sample). Nothing here runs for a model without it; with no model opted in
the data plane holds no cache at all.

What is cached: a 200 JSON answer of a non-stream chat completion or an embeddings call,
at most ``response_cache.max_entry_bytes`` long. Never: errors (any non-200, any answer the
gateway itself made), streams, requests sent with ``Cache-Control: no-store``, and, unless the
model says ``sampled: true``, chat requests that sample (``temperature`` absent or above 0:
the provider would answer differently each time). ``Cache-Control: no-cache`` skips the
lookup and stores the fresh answer.

The key: SHA-256 over the caller's service account id, the operation, the model, the
model's routes (provider/upstream model: a route change starts a new key space) and the
request body normalized (JSON with sorted keys; ``stream: false`` and ``stream_options``
dropped). It is scoped to the service account: every key of one account shares entries
(a rotated key keeps them), no other account ever reads them. The lookup runs after
authentication, the key's model grant, the rate limit and the budget admission, so a
key that may not use the model, or an account out of budget, never gets a cached answer.

Where entries live: in this process (LRU, bounded by ``max_entries`` and ``max_bytes``: a
store past either evicts the least recently used entries first, each eviction counted), or
in Redis (``rate_limits.redis_url``; ``SET ... PX ttl``, Redis's maxmemory policy bounds it)
shared by every replica. Every Redis command waits at most ``redis_timeout_seconds``; a
failure is a miss (counted in ``gateway_cache_errors``), never a failed request, and for
``_REDIS_RETRY_SECONDS`` after it lookups skip Redis (also counted) so an outage does not add
the timeout to every request. Stores to Redis run after the answer is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from gateway_app import redis_client
from gateway_app.config import GatewaySettings, ModelCacheSettings, ResponseCacheSettings
from gateway_app.http import Receive, Scope, Send, header
from gateway_app.pricing import Price

log = logging.getLogger("gateway.cache")

CACHE_HEADER = b"x-gateway-cache"  # hit | miss | bypass, on every answer of a model that opts in
CACHE_PROVIDER = "cache"  # the provider a request log and ledger row names for an answer from the cache
ZERO_PRICE = Price(0.0, 0.0)  # a hit buys nothing: its ledger row costs 0
REDIS_PREFIX = "gateway:cache:v1:"
_ENTRY_OVERHEAD_BYTES = 256  # key, bookkeeping: counted against max_bytes with the body
_REDIS_RETRY_SECONDS = 2.0
_REDIS_ADMIN_TIMEOUT_SECONDS = 5.0  # flush: one SCAN or UNLINK step
_FLUSH_DEADLINE_SECONDS = 60.0
_MAX_PENDING_STORES = 256  # background Redis stores; past it an answer is not stored (counted)
_WARN_EVERY_SECONDS = 30.0
WARM_MAX_REQUESTS = 1000
WARM_CONCURRENCY = 4
_DROPPED_KEYS = ("model", "stream", "stream_options")


class CacheUnavailable(Exception):
    """The store could not be reached for an admin operation (flush)."""


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    body: bytes
    content_type: str
    upstream_model: str  # what answered when it was stored

    def encode(self) -> bytes:
        head = orjson.dumps({"c": self.content_type, "u": self.upstream_model})
        return head + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> CachedAnswer:
        head, _, body = raw.partition(b"\n")
        meta = orjson.loads(head)
        return cls(body, meta["c"], meta["u"])


@dataclass(slots=True)
class ModelStats:
    hits: int = 0
    misses: int = 0
    bypassed: dict[str, int] = field(default_factory=dict)  # reason -> count
    stores: int = 0
    evictions: int = 0  # least recently used, pushed out by the memory store's bounds
    expired: int = 0  # found past their TTL (memory store)
    too_large: int = 0  # answers over max_entry_bytes, served but not stored


@dataclass(frozen=True, slots=True)
class _Policy:
    ttl_seconds: int
    sampled: bool
    routes: bytes  # the model's routes, part of every key


@dataclass(slots=True)
class Lookup:
    """One request's cache decision: its outcome header, and where to store a fresh answer."""

    outcome: str  # hit | miss | bypass
    model: str
    key: str = ""
    ttl_seconds: int = 0
    answer: CachedAnswer | None = None

    @property
    def header(self) -> tuple[bytes, bytes]:
        return (CACHE_HEADER, self.outcome.encode())

    @property
    def stores(self) -> bool:
        return self.outcome == "miss"


def _deterministic(payload: dict[str, Any]) -> bool:
    temperature = payload.get("temperature")
    return isinstance(temperature, int | float) and not isinstance(temperature, bool) and temperature == 0


def cache_key(account_id: int, operation: str, model: str, routes: bytes, payload: dict[str, Any]) -> str:
    """The entry's key; ``payload`` is the request as parsed (before any route rewrites it)."""
    body = {k: v for k, v in payload.items() if k not in _DROPPED_KEYS}
    digest = hashlib.sha256(f"{account_id}\0{operation}\0{model}\0".encode())
    digest.update(routes)
    digest.update(b"\0")
    digest.update(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


class MemoryStore:
    """This process's entries, least recently used first."""

    kind = "memory"

    def __init__(self, settings: ResponseCacheSettings, stats: Callable[[str], ModelStats]):
        self.max_entries = settings.max_entries
        self.max_bytes = settings.max_bytes
        self.bytes = 0
        self.errors = 0  # never: the interface of the Redis store
        self._stats = stats
        self._entries: OrderedDict[str, tuple[str, float, int, CachedAnswer]] = OrderedDict()

    @property
    def entries(self) -> int:
        return len(self._entries)

    def entries_by_model(self) -> dict[str, int]:
        """Entries held per model, expired ones not yet dropped included (admin state: O(entries))."""
        counts: dict[str, int] = {}
        for model, *_ in self._entries.values():
            counts[model] = counts.get(model, 0) + 1
        return counts

    async def get(self, model: str, key: str) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        model, expires, size, answer = entry
        if expires <= time.monotonic():
            del self._entries[key]
            self.bytes -= size
            self._stats(model).expired += 1
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, key: str, model: str, answer: CachedAnswer, ttl_seconds: int) -> None:
        size = (
            len(answer.body) + len(answer.content_type) + len(answer.upstream_model) + _ENTRY_OVERHEAD_BYTES
        )
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old[2]
        now = time.monotonic()
        while self._entries and (
            len(self._entries) >= self.max_entries or self.bytes + size > self.max_bytes
        ):
            _, (evicted_model, expires, evicted_size, _) = self._entries.popitem(last=False)
            self.bytes -= evicted_size
            stats = self._stats(evicted_model)
            if expires <= now:
                stats.expired += 1
            else:
                stats.evictions += 1
        self._entries[key] = (model, now + ttl_seconds, size, answer)
        self.bytes += size

    async def flush(self, models: Iterable[str] | None) -> int:
        if models is None:
            count = len(self._entries)
            self._entries.clear()
            self.bytes = 0
            return count
        wanted = set(models)
        doomed = [key for key, entry in self._entries.items() if entry[0] in wanted]
        for key in doomed:
            self.bytes -= self._entries.pop(key)[2]
        return len(doomed)

    async def close(self) -> None:
        self._entries.clear()
        self.bytes = 0


class RedisStore:
    """Entries in the gateway's Redis, shared by every replica; a Redis failure is a miss."""

    kind = "redis"

    def __init__(self, url: str, timeout: float):
        self.errors = 0  # lookups and stores that did not reach Redis (failed, or skipped after a failure)
        self._url = url
        self._timeout = timeout
        self._skip_until = 0.0
        self._last_warning = 0.0
        self._redis = redis_client.connect(url, timeout)
        self._errors = redis_client.errors()

    @staticmethod
    def name(model: str, key: str) -> str:
        # The model is %-encoded: no ':' and no glob character, so a flush's pattern is exact.
        return f"{REDIS_PREFIX}{quote(model, safe='')}:{key}"

    async def _bounded(self, command: Awaitable[Any]) -> tuple[bool, Any]:
        now = time.monotonic()
        if now < self._skip_until:
            if asyncio.iscoroutine(command):
                command.close()
            self.errors += 1
            return False, None
        try:
            # The socket timeouts bound each read and connect; this bounds the whole command.
            async with asyncio.timeout(self._timeout * 3):
                return True, await command
        except self._errors as exc:
            self.errors += 1
            self._skip_until = time.monotonic() + _REDIS_RETRY_SECONDS
            if now - self._last_warning > _WARN_EVERY_SECONDS:
                self._last_warning = now
                log.warning("response cache store unreachable, serving without it: %s", type(exc).__name__)
            return False, None

    async def get(self, model: str, key: str) -> CachedAnswer | None:
        ok, raw = await self._bounded(self._redis.get(self.name(model, key)))
        if not ok or raw is None:
            return None
        try:
            return CachedAnswer.decode(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.errors += 1  # not written by this gateway's format: a miss, overwritten by the store
            return None

    async def put(self, key: str, model: str, answer: CachedAnswer, ttl_seconds: int) -> None:
        await self._bounded(self._redis.set(self.name(model, key), answer.encode(), px=ttl_seconds * 1000))

    async def flush(self, models: Iterable[str] | None) -> int:
        """SCAN + UNLINK of every entry (or a model's): one step waits at most 5 s, the whole 60 s."""
        patterns = [f"{REDIS_PREFIX}*"] if models is None else [self.name(m, "*") for m in models]
        admin = redis_client.connect(self._url, _REDIS_ADMIN_TIMEOUT_SECONDS)
        deleted = 0
        try:
            async with asyncio.timeout(_FLUSH_DEADLINE_SECONDS):
                for pattern in patterns:
                    batch: list[bytes] = []
                    async for name in admin.scan_iter(match=pattern, count=1000):
                        batch.append(name)
                        if len(batch) >= 500:
                            deleted += await admin.unlink(*batch)
                            batch = []
                    if batch:
                        deleted += await admin.unlink(*batch)
        except self._errors as exc:
            raise CacheUnavailable(
                f"Redis did not complete the flush ({type(exc).__name__}: {exc}); {deleted} entries "
                "were deleted before it stopped; run it again"
            ) from None
        finally:
            await admin.aclose()
        return deleted

    async def close(self) -> None:
        await self._redis.aclose()


Store = MemoryStore | RedisStore


class ResponseCache:
    """The cache the data plane asks; None of it exists unless a model opts in."""

    def __init__(self, settings: GatewaySettings, store: str):
        self._policies = {m.name: self._policy(m.cache, m.routes) for m in settings.models if m.cache}
        self.stats: dict[str, ModelStats] = {name: ModelStats() for name in self._policies}
        self._max_entry_bytes = settings.response_cache.max_entry_bytes
        self.replica = f"{socket.gethostname()}:{settings.server.port}:{os.getpid()}"
        self.store: Store
        if store == "redis":
            assert settings.rate_limits.redis_url is not None
            self.store = RedisStore(
                settings.rate_limits.redis_url.value, settings.response_cache.redis_timeout_seconds
            )
        else:
            self.store = MemoryStore(settings.response_cache, self._model_stats)
        self.pending_stores_dropped = 0
        self._pending: set[asyncio.Task[None]] = set()

    @staticmethod
    def _policy(cache: ModelCacheSettings, routes: list[Any]) -> _Policy:
        fingerprint = "\n".join(sorted(f"{r.provider}/{r.upstream_model}" for r in routes)).encode()
        return _Policy(cache.ttl_seconds, cache.sampled, fingerprint)

    def _model_stats(self, model: str) -> ModelStats:
        stats = self.stats.get(model)
        if stats is None:
            stats = self.stats[model] = ModelStats()
        return stats

    @property
    def models(self) -> list[str]:
        return sorted(self._policies)

    async def lookup(
        self, model: str, operation: str, payload: dict[str, Any], account_id: int, scope: Scope
    ) -> Lookup | None:
        """None when the model does not opt in (no header, nothing stored)."""
        policy = self._policies.get(model)
        if policy is None:
            return None
        stats = self.stats[model]
        reason = self._bypass_reason(operation, payload, policy, scope)
        if reason is not None:
            stats.bypassed[reason] = stats.bypassed.get(reason, 0) + 1
            return Lookup("bypass", model)
        try:
            key = cache_key(account_id, operation, model, policy.routes, payload)
        except orjson.JSONEncodeError:
            stats.bypassed["unkeyable"] = stats.bypassed.get("unkeyable", 0) + 1
            return Lookup("bypass", model)
        refresh = _cache_control_has(scope, b"no-cache")
        answer = None if refresh else await self.store.get(model, key)
        if answer is not None:
            stats.hits += 1
            return Lookup("hit", model, key, policy.ttl_seconds, answer)
        stats.misses += 1
        return Lookup("miss", model, key, policy.ttl_seconds)

    @staticmethod
    def _bypass_reason(operation: str, payload: dict[str, Any], policy: _Policy, scope: Scope) -> str | None:
        if _cache_control_has(scope, b"no-store"):
            return "no_store"
        if operation == "chat":
            if payload.get("stream") is True:
                return "stream"
            if not policy.sampled and not _deterministic(payload):
                return "sampled"
        return None

    def store_answer(
        self, lookup: Lookup, status: int, content_type: str, body: bytes, upstream_model: str
    ) -> None:
        """After a miss was answered: keep a 200 JSON answer (memory: now; Redis: in the background)."""
        if not lookup.stores or status != 200 or not content_type.startswith("application/json"):
            return
        stats = self.stats[lookup.model]
        if len(body) > self._max_entry_bytes:
            stats.too_large += 1
            return
        answer = CachedAnswer(body, content_type, upstream_model)
        stats.stores += 1
        if isinstance(self.store, MemoryStore):
            self.store.put(lookup.key, lookup.model, answer, lookup.ttl_seconds)
            return
        if len(self._pending) >= _MAX_PENDING_STORES:
            self.pending_stores_dropped += 1
            stats.stores -= 1
            return
        task = asyncio.create_task(self.store.put(lookup.key, lookup.model, answer, lookup.ttl_seconds))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def select(self, model: str | None, pattern: str | None) -> list[str] | None:
        """The cached models a flush names (None: all); LookupError when it names none."""
        if model is None and pattern is None:
            return None
        if model is not None and pattern is not None:
            raise ValueError("give 'model' or 'pattern', not both")
        if model is not None:
            chosen = [model] if model in self._policies else []
        else:
            chosen = [m for m in self.models if fnmatch.fnmatchcase(m, pattern or "")]
        if not chosen:
            wanted = f"model '{model}'" if model is not None else f"pattern '{pattern}'"
            raise LookupError(
                f"{wanted} names no model that uses the response cache; cached models: "
                f"{', '.join(self.models)}"
            )
        return chosen

    async def flush(self, models: list[str] | None) -> int:
        await self.settle()
        return await self.store.flush(models)

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for background stores, so a flush is not followed by an older store."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)

    def describe(self) -> dict[str, Any]:
        store = self.store
        out: dict[str, Any] = {
            "enabled": True,
            "store": store.kind,
            "replica": self.replica,
            "errors": store.errors,
            "models": {
                name: {
                    "ttl_seconds": policy.ttl_seconds,
                    "sampled": policy.sampled,
                    "hits": self.stats[name].hits,
                    "misses": self.stats[name].misses,
                    "bypassed": sum(self.stats[name].bypassed.values()),
                    "stores": self.stats[name].stores,
                    "evictions": self.stats[name].evictions,
                    **({"entries": 0} if isinstance(store, MemoryStore) else {}),
                }
                for name, policy in sorted(self._policies.items())
            },
        }
        if isinstance(store, MemoryStore):
            for name, count in store.entries_by_model().items():
                if name in out["models"]:
                    out["models"][name]["entries"] = count
            out.update(
                entries=store.entries,
                bytes=store.bytes,
                max_entries=store.max_entries,
                max_bytes=store.max_bytes,
            )
        return out

    async def close(self) -> None:
        await self.settle()
        for task in list(self._pending):
            task.cancel()
        await self.store.close()


def _cache_control_has(scope: Scope, directive: bytes) -> bool:
    value = header(scope, b"cache-control")
    return value is not None and directive in value.lower()


def store_kind(settings: GatewaySettings) -> str:
    chosen = settings.response_cache.store
    if chosen == "auto":
        return "redis" if settings.rate_limits.redis_url is not None else "memory"
    return chosen


def build_response_cache(settings: GatewaySettings) -> ResponseCache | None:
    if not any(m.cache is not None for m in settings.models):
        return None  # the data plane skips every cache step
    return ResponseCache(settings, store_kind(settings))


# --- warming -----------------------------------------------------------------

Handle = Callable[[str, Scope, Receive, Send], Awaitable[None]]


def _operation(request: dict[str, Any]) -> tuple[str, str]:
    if "input" in request and "messages" not in request:
        return "embeddings", "/v1/embeddings"
    return "chat", "/v1/chat/completions"


async def warm(
    handle: Handle, key: str, requests: list[dict[str, Any]], deadline_seconds: float
) -> dict[str, Any]:
    """Replay requests through the data plane as the key would send them (auth, grants, budget,
    ledger, metrics: all as for any request). The report counts each request's outcome:
    stored (a miss now cached), hit (already cached), bypass (not cacheable: a stream, a sampling
    chat of a model without ``sampled``, or a model without ``cache``), failed (not 200),
    skipped (not started before the deadline)."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + deadline_seconds
    limit = asyncio.Semaphore(WARM_CONCURRENCY)
    authorization = b"Bearer " + key.encode("latin-1")
    outcomes: list[tuple[str, int, str | None]] = [("skipped", 0, None)] * len(requests)

    async def one(index: int, request: dict[str, Any]) -> None:
        async with limit:
            if loop.time() >= ends:
                return
            operation, path = _operation(request)
            body = orjson.dumps(request)
            scope: Scope = {
                "type": "http",
                "method": "POST",
                "path": path,
                "query_string": b"",
                "client": ("cache-warm", 0),
                "headers": [
                    (b"authorization", authorization),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-gateway-component", b"cache-warm"),
                ],
            }
            answer: dict[str, Any] = {"status": 0, "headers": [], "body": b""}

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    answer["status"] = message["status"]
                    answer["headers"] = message.get("headers", [])
                else:
                    answer["body"] += message.get("body", b"")

            await handle(operation, scope, receive, send)
            status = answer["status"]
            outcome = dict(answer["headers"]).get(CACHE_HEADER, b"bypass").decode()
            if status != 200:
                message = None
                with contextlib.suppress(Exception):
                    message = orjson.loads(answer["body"])["error"]["message"]
                outcomes[index] = ("failed", status, message)
            else:
                outcomes[index] = ({"miss": "stored"}.get(outcome, outcome), status, None)

    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    counts = {"requests": len(requests), "stored": 0, "hit": 0, "bypass": 0, "failed": 0, "skipped": 0}
    failures = []
    for line, (outcome, status, message) in enumerate(outcomes, start=1):
        counts[outcome] += 1
        if outcome == "failed" and len(failures) < 10:
            failures.append({"line": line, "status": status, "message": message})
    return {**counts, "failures": failures}
