"""Admin routes for providers and routes: JSON over gateway_app.provider_control."""

from __future__ import annotations

from functools import partial

from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter
from gateway_app.provider_control import ProviderControl


class ProvidersRoutes:
    def __init__(self, control: ProviderControl):
        self._control = control

    def register(self, router: AdminRouter) -> None:
        router.add("GET", "/providers", self.list_providers)
        router.add("POST", "/providers/{name}/disable", partial(self.switch_provider, False))
        router.add("POST", "/providers/{name}/enable", partial(self.switch_provider, True))
        router.add("POST", "/providers/{name}/reset-circuit", self.reset_provider)
        router.add("POST", "/providers/{name}/health-check", self.health_check)
        router.add("POST", "/routes/disable", partial(self.switch_route, False))
        router.add("POST", "/routes/enable", partial(self.switch_route, True))
        router.add("POST", "/routes/reset-circuit", self.reset_route)

    async def list_providers(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"data": self._control.describe()})

    async def switch_provider(self, enabled: bool, request: AdminRequest) -> AdminResponse:
        result = await self._control.set_provider_enabled(
            request.params["name"], enabled, request.admin.email
        )
        return AdminResponse(200, result)

    async def switch_route(self, enabled: bool, request: AdminRequest) -> AdminResponse:
        key = (await request.json()).get("key")
        return AdminResponse(200, await self._control.set_route_enabled(key, enabled, request.admin.email))

    async def reset_provider(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(
            200, await self._control.reset_provider(request.params["name"], request.admin.email)
        )

    async def reset_route(self, request: AdminRequest) -> AdminResponse:
        key = (await request.json()).get("key")
        return AdminResponse(200, await self._control.reset_route(key, request.admin.email))

    async def health_check(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, await self._control.health_check(request.params["name"]))
