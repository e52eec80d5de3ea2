"""Admin routes for providers and routes: state, disable/enable, circuit reset, live health check.

Decisions are written to the database and applied by every replica within
``resilience.state_refresh_seconds``; the replica that took the call applies
them at once. Circuit state, last error and latency are this replica's view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway_app import resilience
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter
from gateway_app.config import ProviderSettings
from gateway_app.http import HTTPError
from gateway_app.routing import Route

if TYPE_CHECKING:
    from gateway_app.app import Gateway

_MAX_PROBE_SECONDS = 10.0


def register(router: AdminRouter, gateway: Gateway) -> None:
    def routes_of(provider: str) -> list[Route]:
        assert gateway.router is not None
        return [r for r in gateway.router.routes_by_key.values() if r.provider_name == provider]

    def provider_named(name: str) -> ProviderSettings:
        for provider in gateway.settings.providers:
            if provider.name == name:
                return provider
        known = ", ".join(p.name for p in gateway.settings.providers)
        raise HTTPError(404, f"no provider '{name}'; configured: {known}", "provider_not_found")

    async def route_named(request: AdminRequest) -> Route:
        assert gateway.router is not None
        key = (await request.json()).get("key")
        if not isinstance(key, str) or not key:
            raise HTTPError(
                400,
                "'key' is required: '<model>/<provider>/<upstream_model>'",
                "invalid_request_error",
                param="key",
            )
        route = gateway.router.routes_by_key.get(key)
        if route is None:
            raise HTTPError(
                404,
                f"no route '{key}'; GET /admin/api/providers lists route keys",
                "route_not_found",
                param="key",
            )
        return route

    def describe(route: Route) -> dict[str, Any]:
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

    async def applied() -> None:
        assert gateway.overrides is not None
        await gateway.overrides.refresh()

    async def list_providers(request: AdminRequest) -> AdminResponse:
        data = []
        for provider in gateway.settings.providers:
            routes = routes_of(provider.name)
            override = routes[0].provider_admin_enabled if routes else None
            data.append(
                {
                    "name": provider.name,
                    "type": provider.type,
                    "enabled": provider.enabled if override is None else override,
                    "routes": [describe(r) for r in routes],
                }
            )
        return AdminResponse(200, {"data": data})

    def provider_switch(enabled: bool):
        async def handler(request: AdminRequest) -> AdminResponse:
            name = provider_named(request.params["name"]).name
            await resilience.set_provider_enabled(gateway.database, name, enabled, request.admin.email)
            await applied()
            return AdminResponse(200, {"name": name, "enabled": enabled})

        return handler

    def route_switch(enabled: bool):
        async def handler(request: AdminRequest) -> AdminResponse:
            route = await route_named(request)
            await resilience.set_route_enabled(gateway.database, route.key, enabled, request.admin.email)
            await applied()
            return AdminResponse(200, {"key": route.key, "enabled": enabled})

        return handler

    async def reset_provider(request: AdminRequest) -> AdminResponse:
        name = provider_named(request.params["name"]).name
        keys = [r.key for r in routes_of(name)]
        await resilience.reset_circuits(gateway.database, keys, request.admin.email)
        await applied()
        return AdminResponse(200, {"name": name, "reset": keys})

    async def reset_route(request: AdminRequest) -> AdminResponse:
        route = await route_named(request)
        await resilience.reset_circuits(gateway.database, [route.key], request.admin.email)
        await applied()
        return AdminResponse(200, {"key": route.key, "circuit": route.health.state})

    async def health_check(request: AdminRequest) -> AdminResponse:
        assert gateway.router is not None
        settings = provider_named(request.params["name"])
        routes = routes_of(settings.name)
        if not routes:
            raise HTTPError(409, f"provider '{settings.name}' serves no route to probe", "no_route_to_probe")
        route = routes[0]
        operation = "chat" if "chat" in gateway.router.models[route.model].operations else "embeddings"
        result = await resilience.probe_route(
            route, operation, min(settings.timeout_seconds, _MAX_PROBE_SECONDS)
        )
        return AdminResponse(200, result)

    router.add("GET", "/providers", list_providers)
    router.add("POST", "/providers/{name}/disable", provider_switch(False))
    router.add("POST", "/providers/{name}/enable", provider_switch(True))
    router.add("POST", "/providers/{name}/reset-circuit", reset_provider)
    router.add("POST", "/providers/{name}/health-check", health_check)
    router.add("POST", "/routes/disable", route_switch(False))
    router.add("POST", "/routes/enable", route_switch(True))
    router.add("POST", "/routes/reset-circuit", reset_route)
