"""Admin routes for service accounts and their budgets."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway_app import accounts
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter, text_field

if TYPE_CHECKING:
    from gateway_app.app import Gateway


def register(router: AdminRouter, gateway: Gateway) -> None:
    async def list_accounts(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"data": await accounts.list_service_accounts(gateway.database)})

    async def create_account(request: AdminRequest) -> AdminResponse:
        body = await request.optional_json()
        budget = accounts.parse_budget(body.get("budget"))
        return AdminResponse(
            201, await accounts.create_service_account(gateway.database, text_field(body, "name"), budget)
        )

    async def disable(request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, await accounts.set_disabled(gateway.database, request.params["name"], True))

    async def enable(request: AdminRequest) -> AdminResponse:
        return AdminResponse(
            200, await accounts.set_disabled(gateway.database, request.params["name"], False)
        )

    async def set_budget(request: AdminRequest) -> AdminResponse:
        budget = accounts.parse_budget(await request.json_value())
        return AdminResponse(200, await accounts.set_budget(gateway.database, request.params["name"], budget))

    router.add("GET", "/service-accounts", list_accounts)
    router.add("POST", "/service-accounts", create_account)
    router.add("POST", "/service-accounts/{name}/disable", disable)
    router.add("POST", "/service-accounts/{name}/enable", enable)
    router.add("PUT", "/service-accounts/{name}/budget", set_budget)
