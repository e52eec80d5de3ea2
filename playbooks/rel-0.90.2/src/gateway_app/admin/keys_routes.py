"""Admin routes for gateway API keys: the secret is in the answer to create and rotate only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway_app import keys
from gateway_app.admin.control import body_object, control_errors, text_field
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter
from gateway_app.config import parse_duration

if TYPE_CHECKING:
    from gateway_app.app import Gateway


def register(router: AdminRouter, gateway: Gateway) -> None:
    known_models = [m.name for m in gateway.settings.models]

    async def list_keys(request: AdminRequest) -> AdminResponse:
        include_revoked = request.query.get("include_revoked") == "true"
        return AdminResponse(200, {"data": await keys.list_keys(gateway.database, include_revoked)})

    @control_errors
    async def create_key(request: AdminRequest) -> AdminResponse:
        body = await request.json()
        expires_in = body.get("expires_in")
        if expires_in is not None and not isinstance(expires_in, str):
            raise ValueError("expires_in must be a duration like 30d")
        secret, created = await keys.create_key(
            gateway.database,
            text_field(body, "service_account"),
            text_field(body, "name"),
            keys.validate_grants(body.get("models", "all"), known_models),
            parse_duration(expires_in) if expires_in else None,
        )
        return AdminResponse(201, {"key": secret, **created})

    @control_errors
    async def revoke(request: AdminRequest) -> AdminResponse:
        public_id = keys.normalize_public_id(request.params["public_id"])
        if not await keys.revoke_key(gateway.database, public_id):
            raise keys.NotFound(f"no active key gwk_{public_id}")
        return AdminResponse(200, await keys.get_key(gateway.database, public_id))

    @control_errors
    async def rotate(request: AdminRequest) -> AdminResponse:
        body = await body_object(request)
        after = body.get("revoke_old_after_seconds")
        if after is not None and (isinstance(after, bool) or not isinstance(after, int | float) or after < 0):
            raise ValueError("revoke_old_after_seconds must be a number >= 0")
        secret, new, old = await keys.rotate_key(
            gateway.database, keys.normalize_public_id(request.params["public_id"]), after
        )
        return AdminResponse(201, {"key": secret, **new, "old": old})

    router.add("GET", "/keys", list_keys)
    router.add("POST", "/keys", create_key)
    router.add("POST", "/keys/{public_id}/revoke", revoke)
    router.add("POST", "/keys/{public_id}/rotate", rotate)
