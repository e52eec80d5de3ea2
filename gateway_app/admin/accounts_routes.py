"""Admin routes for service accounts and their budgets."""

from __future__ import annotations

from gateway_app import accounts
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter, text_field
from gateway_app.storage import Database


class AccountsRoutes:
    def __init__(self, db: Database):
        self._db = db

    def register(self, router: AdminRouter) -> None:
        router.add("GET", "/service-accounts", self.list_accounts)
        router.add("POST", "/service-accounts", self.create_account)
        router.add("POST", "/service-accounts/{name}/disable", self.disable)
        router.add("POST", "/service-accounts/{name}/enable", self.enable)
        router.add("PUT", "/service-accounts/{name}/budget", self.set_budget)

    async def list_accounts(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, {"data": await accounts.list_service_accounts(self._db)})

    async def create_account(self, request: AdminRequest) -> AdminResponse:
        body = await request.optional_json()
        budget = accounts.parse_budget(body.get("budget"))
        return AdminResponse(
            201, await accounts.create_service_account(self._db, text_field(body, "name"), budget)
        )

    async def disable(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, await accounts.set_disabled(self._db, request.params["name"], True))

    async def enable(self, request: AdminRequest) -> AdminResponse:
        return AdminResponse(200, await accounts.set_disabled(self._db, request.params["name"], False))

    async def set_budget(self, request: AdminRequest) -> AdminResponse:
        budget = accounts.parse_budget(await request.json_value())
        return AdminResponse(200, await accounts.set_budget(self._db, request.params["name"], budget))
