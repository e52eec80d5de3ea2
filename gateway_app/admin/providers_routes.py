"""Admin routes for providers and routes: JSON over gateway_app.provider_control."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter

if TYPE_CHECKING:
    from gateway_app.app import Gateway


def register(router: AdminRouter, gateway: Gateway) -> None:
    control = gateway.provider_control

    async def list_providers(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"data": control().describe()})

    def provider_switch(enabled: bool):
        async def handler(request: AdminRequest) -> AdminResponse:
            result = await control().set_provider_enabled(
                request.params["name"], enabled, request.admin.email
            )
            return AdminResponse(200, result)

        return handler

    def route_switch(enabled: bool):
        async def handler(request: AdminRequest) -> AdminResponse:
            key = (await request.json()).get("key")
            return AdminResponse(200, await control().set_route_enabled(key, enabled, request.admin.email))

        return handler

    async def reset_provider(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, await control().reset_provider(request.params["name"], request.admin.email))

    async def reset_route(request: AdminRequest) -> AdminResponse:
        key = (await request.json()).get("key")
        return AdminResponse(200, await control().reset_route(key, request.admin.email))

    async def health_check(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, await control().health_check(request.params["name"]))

    router.add("GET", "/providers", list_providers)
    router.add("POST", "/providers/{name}/disable", provider_switch(False))
    router.add("POST", "/providers/{name}/enable", provider_switch(True))
    router.add("POST", "/providers/{name}/reset-circuit", reset_provider)
    router.add("POST", "/providers/{name}/health-check", health_check)
    router.add("POST", "/routes/disable", route_switch(False))
    router.add("POST", "/routes/enable", route_switch(True))
    router.add("POST", "/routes/reset-circuit", reset_route)
