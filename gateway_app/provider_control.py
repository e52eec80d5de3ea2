"""Providers and routes for operators: state, disable/enable, circuit reset, live health check.

Shared by the JSON admin API and the admin UI. Decisions are written to the
database and applied by every replica within ``resilience.state_refresh_seconds``;
the replica that took the call applies them at once. Circuit state, last error
and latency are this replica's view.
"""

from __future__ import annotations

from typing import Any

from gateway_app import resilience
from gateway_app.config import ProviderSettings
from gateway_app.endpoint_probe import shown_url
from gateway_app.errors import Conflict, Invalid, NotFound
from gateway_app.resilience import OverridesSync
from gateway_app.routing import Route, Router
from gateway_app.storage import Database

MAX_PROBE_SECONDS = 10.0


class ProviderNotFound(NotFound):
    code = "provider_not_found"


class RouteNotFound(NotFound):
    code = "route_not_found"
    param = "key"


class NoRouteToProbe(Conflict):
    code = "no_route_to_probe"


class ProviderControl:
    def __init__(
        self, providers: list[ProviderSettings], router: Router, overrides: OverridesSync, db: Database
    ):
        self._providers = providers
        self._router = router
        self._overrides = overrides
        self._db = db

    def routes_of(self, provider: str) -> list[Route]:
        return [r for r in self._router.routes_by_key.values() if r.provider_name == provider]

    def provider_named(self, name: str) -> ProviderSettings:
        for provider in self._providers:
            if provider.name == name:
                return provider
        known = ", ".join(p.name for p in self._providers)
        raise ProviderNotFound(f"no provider '{name}'; configured: {known}")

    def route_named(self, key: Any) -> Route:
        if not isinstance(key, str) or not key:
            raise Invalid("'key' is required: '<model>/<provider>/<upstream_model>'", param="key")
        route = self._router.routes_by_key.get(key)
        if route is None:
            raise RouteNotFound(f"no route '{key}'; GET /admin/api/providers lists route keys")
        return route

    def describe(self) -> list[dict[str, Any]]:
        """Every configured provider with its effective switch and its routes' state."""
        data = []
        for provider in self._providers:
            routes = self.routes_of(provider.name)
            override = routes[0].provider_admin_enabled if routes else None
            entry = {
                "name": provider.name,
                "type": provider.type,
                "enabled": provider.enabled if override is None else override,
                "routes": [_describe_route(r) for r in routes],
            }
            endpoints = getattr(routes[0].provider, "endpoints", None) if routes else None
            if endpoints:  # regional endpoints (providers/regional.py): this replica's view
                entry["endpoints"] = [_describe_endpoint(e) for e in endpoints]
            data.append(entry)
        return data

    async def set_provider_enabled(self, name: str, enabled: bool, by: str) -> dict[str, Any]:
        name = self.provider_named(name).name
        await resilience.set_provider_enabled(self._db, name, enabled, by)
        await self._overrides.refresh()
        return {"name": name, "enabled": enabled}

    async def set_route_enabled(self, key: Any, enabled: bool, by: str) -> dict[str, Any]:
        route = self.route_named(key)
        await resilience.set_route_enabled(self._db, route.key, enabled, by)
        await self._overrides.refresh()
        return {"key": route.key, "enabled": enabled}

    async def reset_provider(self, name: str, by: str) -> dict[str, Any]:
        name = self.provider_named(name).name
        keys = [r.key for r in self.routes_of(name)]
        await resilience.reset_circuits(self._db, keys, by)
        await self._overrides.refresh()
        return {"name": name, "reset": keys}

    async def reset_route(self, key: Any, by: str) -> dict[str, Any]:
        route = self.route_named(key)
        await resilience.reset_circuits(self._db, [route.key], by)
        await self._overrides.refresh()
        return {"key": route.key, "circuit": route.health.state}

    async def health_check(self, name: str) -> dict[str, Any]:
        """One live request through the provider's first route: {"ok", "latency_ms", "error", "route"}."""
        settings = self.provider_named(name)
        routes = self.routes_of(settings.name)
        if not routes:
            raise NoRouteToProbe(f"provider '{settings.name}' serves no route to probe")
        route = routes[0]
        operation = "chat" if "chat" in self._router.models[route.model].operations else "embeddings"
        return await resilience.probe_route(
            route, operation, min(settings.timeout_seconds, MAX_PROBE_SECONDS)
        )


def _describe_route(route: Route) -> dict[str, Any]:
    health = route.health
    route_on = route.settings.enabled if route.admin_enabled is None else route.admin_enabled
    return {
        "key": route.key,
        "model": route.model,
        "upstream_model": route.upstream_model,
        "priority": route.priority,
        "weight": route.weight,
        "enabled": route_on,
        "circuit": health.state,
        "last_error": health.last_error,
        "latency_ms": None if health.latency_ms is None else round(health.latency_ms, 1),
    }


def _describe_endpoint(endpoint: Any) -> dict[str, Any]:
    ewma = endpoint.ewma_seconds
    return {
        "region": endpoint.region,
        "base_url": shown_url(endpoint.base_url),
        "circuit": endpoint.health.state,
        "last_error": endpoint.health.last_error,
        "latency_ms": None if ewma is None else round(ewma * 1000, 1),
    }
