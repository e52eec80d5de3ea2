"""Admin routes for the response cache: state, flush (all, a model, a model-name pattern), warm.

Each call acts on the replica that answers it: with the in-process store a flush or a
warm has to reach every replica (the cache_flush and cache_warm runbooks call each
instance); with the Redis store one call is enough. Answers name the replica and store.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter
from gateway_app.http import HTTPError, invalid_request
from gateway_app.response_cache import WARM_MAX_REQUESTS, CacheUnavailable, Handle, ResponseCache, warm

log = logging.getLogger("gateway.cache")

_WARM_DEFAULT_SECONDS = 300.0
_WARM_MAX_SECONDS = 1800.0


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise invalid_request(f"'{name}' must be a non-empty string", param=name)
    return value


class CacheRoutes:
    def __init__(self, cache: ResponseCache | None, store: str, handle: Handle):
        self._cache = cache  # None when no model opts in (`cache:`)
        self._store = store  # the store kind the config chose, named even while unused
        self._handle = handle  # the data plane: warm requests take the path of client requests

    def register(self, router: AdminRouter) -> None:
        router.add("GET", "/cache", self.state)
        router.add("POST", "/cache/flush", self.flush)
        router.add("POST", "/cache/warm", self.warm_cache)

    def _enabled_cache(self) -> ResponseCache:
        if self._cache is None:
            raise HTTPError(
                409,
                "no model uses the response cache: give a model `cache: {ttl_seconds: N}` in the config",
                "cache_disabled",
            )
        return self._cache

    async def state(self, request: AdminRequest) -> AdminResponse:
        if self._cache is None:
            return AdminResponse(200, {"enabled": False, "store": self._store, "models": {}})
        return AdminResponse(200, self._cache.describe())

    async def flush(self, request: AdminRequest) -> AdminResponse:
        current = self._enabled_cache()
        body = await request.optional_json()
        try:
            models = current.select(_optional_text(body, "model"), _optional_text(body, "pattern"))
        except ValueError as exc:
            raise invalid_request(str(exc)) from None
        except LookupError as exc:
            raise HTTPError(404, str(exc), "model_not_cached", param="model") from None
        try:
            flushed = await current.flush(models)
        except CacheUnavailable as exc:
            raise HTTPError(503, str(exc), "cache_store_unavailable", "api_error") from None
        log.warning(
            "response cache flushed by %s: %d entries (%s)",
            request.admin.email,
            flushed,
            "all models" if models is None else ", ".join(models),
        )
        return AdminResponse(
            200,
            {
                "flushed": flushed,
                "models": models if models is not None else current.models,
                "store": current.store.kind,
                "replica": current.replica,
            },
        )

    async def warm_cache(self, request: AdminRequest) -> AdminResponse:
        current = self._enabled_cache()
        body = await request.json()
        key = body.get("key")
        if not isinstance(key, str) or not key:
            raise invalid_request(
                "'key' is required: the gateway API key to send the requests with", param="key"
            )
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests or not all(isinstance(r, dict) for r in requests):
            raise invalid_request("'requests' must be a non-empty array of request bodies", param="requests")
        if len(requests) > WARM_MAX_REQUESTS:
            raise invalid_request(
                f"at most {WARM_MAX_REQUESTS} requests per warm call (got {len(requests)}): split the file",
                param="requests",
            )
        seconds = body.get("timeout_seconds", _WARM_DEFAULT_SECONDS)
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 < seconds <= _WARM_MAX_SECONDS
        ):
            raise invalid_request(
                f"'timeout_seconds' must be a number in (0, {_WARM_MAX_SECONDS:g}]", param="timeout_seconds"
            )
        report = await warm(self._handle, key, requests, float(seconds))
        log.info(
            "response cache warmed by %s: %d requests, %d stored, %d already cached, %d failed",
            request.admin.email,
            report["requests"],
            report["stored"],
            report["hit"],
            report["failed"],
        )
        return AdminResponse(200, {**report, "store": current.store.kind, "replica": current.replica})
