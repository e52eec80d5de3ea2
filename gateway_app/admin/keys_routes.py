"""Admin routes for gateway API keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway_app import keys
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter

if TYPE_CHECKING:
    from gateway_app.app import Gateway


def register(router: AdminRouter, gateway: Gateway) -> None:
    async def list_keys(request: AdminRequest) -> AdminResponse:
        assert gateway.db is not None
        include_revoked = request.query.get("include_revoked") == "true"
        return AdminResponse(200, {"data": await keys.list_keys(gateway.db, include_revoked)})

    router.add("GET", "/keys", list_keys)
