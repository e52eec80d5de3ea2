"""Admin routes for providers and routes: JSON over gateway_app.provider_control."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from gateway_app.admin.router import AdminHandler, AdminRequest, AdminResponse, AdminRouter
from gateway_app.http import HTTPError, invalid_request
from gateway_app.provider_control import NoRouteToProbe, ProviderNotFound, RouteNotFound

if TYPE_CHECKING:
    from gateway_app.app import Gateway


def _errors(handler: AdminHandler) -> AdminHandler:
    @functools.wraps(handler)
    async def wrapped(request: AdminRequest) -> AdminResponse:
        try:
            return await handler(request)
        except ProviderNotFound as exc:
            raise HTTPError(404, str(exc), "provider_not_found") from None
        except RouteNotFound as exc:
            raise HTTPError(404, str(exc), "route_not_found", param="key") from None
        except NoRouteToProbe as exc:
            raise HTTPError(409, str(exc), "no_route_to_probe") from None
        except ValueError as exc:
            raise invalid_request(str(exc), param="key") from None

    return wrapped


def register(router: AdminRouter, gateway: Gateway) -> None:
    control = gateway.provider_control

    async def list_providers(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"data": control().describe()})

    def provider_switch(enabled: bool):
        @_errors
        async def handler(request: AdminRequest) -> AdminResponse:
            result = await control().set_provider_enabled(
                request.params["name"], enabled, request.admin.email
            )
            return AdminResponse(200, result)

        return handler

    def route_switch(enabled: bool):
        @_errors
        async def handler(request: AdminRequest) -> AdminResponse:
            key = (await request.json()).get("key")
            return AdminResponse(200, await control().set_route_enabled(key, enabled, request.admin.email))

        return handler

    @_errors
    async def reset_provider(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, await control().reset_provider(request.params["name"], request.admin.email))

    @_errors
    async def reset_route(request: AdminRequest) -> AdminResponse:
        key = (await request.json()).get("key")
        return AdminResponse(200, await control().reset_route(key, request.admin.email))

    @_errors
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
