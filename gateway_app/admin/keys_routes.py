"""Admin routes for gateway API keys: the secret is in the answer to create and rotate only."""

from __future__ import annotations

from typing import Any

from gateway_app import keys
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter, text_field
from gateway_app.config import parse_duration
from gateway_app.storage import Database


def _seconds(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
        raise ValueError(f"{name} must be a number >= 0")
    return value


class KeysRoutes:
    def __init__(self, db: Database, known_models: list[str]):
        self._db = db
        self._known_models = known_models

    def register(self, router: AdminRouter) -> None:
        router.add("GET", "/keys", self.list_keys)
        router.add("POST", "/keys", self.create_key)
        router.add("POST", "/keys/{public_id}/revoke", self.revoke)
        router.add("POST", "/keys/{public_id}/rotate", self.rotate)

    async def list_keys(self, request: AdminRequest) -> AdminResponse:
        include_revoked = request.query.get("include_revoked") == "true"
        return AdminResponse(200, {"data": await keys.list_keys(self._db, include_revoked)})

    async def create_key(self, request: AdminRequest) -> AdminResponse:
        body = await request.json()
        expires_in = body.get("expires_in")
        if expires_in is not None and not isinstance(expires_in, str):
            raise ValueError("expires_in must be a duration like 30d")
        secret, created = await keys.create_key(
            self._db,
            text_field(body, "service_account"),
            text_field(body, "name"),
            keys.validate_grants(body.get("models", "all"), self._known_models),
            parse_duration(expires_in) if expires_in else None,
        )
        return AdminResponse(201, {"key": secret, **created})

    async def revoke(self, request: AdminRequest) -> AdminResponse:
        public_id = keys.normalize_public_id(request.params["public_id"])
        after = _seconds(await request.optional_json(), "after_seconds") or 0
        return AdminResponse(200, await keys.revoke_active_key(self._db, public_id, after))

    async def rotate(self, request: AdminRequest) -> AdminResponse:
        after = _seconds(await request.optional_json(), "revoke_old_after_seconds")
        secret, new, old = await keys.rotate_key(
            self._db, keys.normalize_public_id(request.params["public_id"]), after
        )
        return AdminResponse(201, {"key": secret, **new, "old": old})
