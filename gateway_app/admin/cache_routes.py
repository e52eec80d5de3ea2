"""Admin routes for the response cache: state, flush (all, a model, a model-name pattern), warm.

Each call acts on the replica that answers it: with the in-process store a flush or a
warm has to reach every replica (the cache_flush and cache_warm runbooks call each
instance); with the Redis store one call is enough. Answers name the replica and store.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter
from gateway_app.http import HTTPError, invalid_request
from gateway_app.response_cache import WARM_MAX_REQUESTS, CacheUnavailable, ResponseCache, store_kind, warm

if TYPE_CHECKING:
    from gateway_app.app import Gateway

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


def register(router: AdminRouter, gateway: Gateway) -> None:
    def cache() -> ResponseCache:
        if gateway.response_cache is None:
            raise HTTPError(
                409,
                "no model uses the response cache: give a model `cache: {ttl_seconds: N}` in the config",
                "cache_disabled",
            )
        return gateway.response_cache

    async def state(request: AdminRequest) -> AdminResponse:
        if gateway.response_cache is None:
            return AdminResponse(200, {"enabled": False, "store": store_kind(gateway.settings), "models": {}})
        return AdminResponse(200, gateway.response_cache.describe())

    async def flush(request: AdminRequest) -> AdminResponse:
        current = cache()
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

    async def warm_cache(request: AdminRequest) -> AdminResponse:
        current = cache()
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
        assert gateway.data_plane is not None
        report = await warm(gateway.data_plane.handle, key, requests, float(seconds))
        log.info(
            "response cache warmed by %s: %d requests, %d stored, %d already cached, %d failed",
            request.admin.email,
            report["requests"],
            report["stored"],
            report["hit"],
            report["failed"],
        )
        return AdminResponse(200, {**report, "store": current.store.kind, "replica": current.replica})

    router.add("GET", "/cache", state)
    router.add("POST", "/cache/flush", flush)
    router.add("POST", "/cache/warm", warm_cache)
