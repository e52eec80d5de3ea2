"""Admin routes for gateway API keys: the secret is in the answer to create and rotate only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway_app import keys
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter, text_field
from gateway_app.config import parse_duration

if TYPE_CHECKING:
    from gateway_app.app import Gateway


def _seconds(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
        raise ValueError(f"{name} must be a number >= 0")
    return value


def register(router: AdminRouter, gateway: Gateway) -> None:
    known_models = [m.name for m in gateway.settings.models]

    async def list_keys(request: AdminRequest) -> AdminResponse:
        include_revoked = request.query.get("include_revoked") == "true"
        return AdminResponse(200, {"data": await keys.list_keys(gateway.database, include_revoked)})

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

    async def revoke(request: AdminRequest) -> AdminResponse:
        public_id = keys.normalize_public_id(request.params["public_id"])
        after = _seconds(await request.optional_json(), "after_seconds") or 0
        return AdminResponse(200, await keys.revoke_active_key(gateway.database, public_id, after))

    async def rotate(request: AdminRequest) -> AdminResponse:
        after = _seconds(await request.optional_json(), "revoke_old_after_seconds")
        secret, new, old = await keys.rotate_key(
            gateway.database, keys.normalize_public_id(request.params["public_id"]), after
        )
        return AdminResponse(201, {"key": secret, **new, "old": old})

    router.add("GET", "/keys", list_keys)
    router.add("POST", "/keys", create_key)
    router.add("POST", "/keys/{public_id}/revoke", revoke)
    router.add("POST", "/keys/{public_id}/rotate", rotate)
