"""Admin routes for sessions and passwords."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway_app.admin import sessions
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter
from gateway_app.http import HTTPError, invalid_request

if TYPE_CHECKING:
    from gateway_app.app import Gateway

_GENERIC_LOGIN_ERROR = "invalid email or password"


def _cookie(token: str, max_age: int) -> tuple[bytes, bytes]:
    value = f"gw_session={token}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    return (b"set-cookie", value.encode())


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise invalid_request(f"'{name}' is required and must be a non-empty string", param=name)
    return value


def register(router: AdminRouter, gateway: Gateway) -> None:
    ttl = gateway.settings.auth.session_ttl_seconds

    async def login(request: AdminRequest) -> AdminResponse:
        body = await request.json()
        try:
            session = await sessions.login(
                gateway.database, _text(body, "email"), _text(body, "password"), request.client_addr, ttl
            )
        except sessions.LoginThrottled as exc:
            raise HTTPError(
                429,
                str(exc),
                "login_throttled",
                "rate_limit_error",
                headers=[(b"retry-after", str(exc.retry_after_seconds).encode())],
            ) from None
        except sessions.InvalidCredentials:
            raise HTTPError(
                401, _GENERIC_LOGIN_ERROR, "invalid_credentials", "authentication_error"
            ) from None
        return AdminResponse(
            200,
            {
                "token": session.token,
                "expires_at": session.expires_at,
                "must_change_password": session.must_change_password,
            },
            [_cookie(session.token, ttl)],
        )

    async def logout(request: AdminRequest) -> AdminResponse:
        await sessions.logout(gateway.database, request.admin.session_id)
        return AdminResponse(200, {"status": "logged_out"}, [_cookie("", 0)])

    async def me(request: AdminRequest) -> AdminResponse:
        admin = request.admin
        return AdminResponse(
            200,
            {
                "email": admin.email,
                "must_change_password": admin.must_change_password,
                "session_expires_at": admin.session_expires_at,
            },
        )

    async def change_password(request: AdminRequest) -> AdminResponse:
        body = await request.json()
        try:
            session = await sessions.change_password(
                gateway.database,
                request.admin,
                _text(body, "current_password"),
                _text(body, "new_password"),
                request.client_addr,
                ttl,
            )
        except sessions.WeakPassword as exc:
            raise HTTPError(400, str(exc), "weak_password", param="new_password") from None
        except sessions.InvalidCredentials:
            raise HTTPError(
                401, "the current password is wrong", "invalid_credentials", "authentication_error"
            ) from None
        return AdminResponse(
            200, {"token": session.token, "expires_at": session.expires_at}, [_cookie(session.token, ttl)]
        )

    router.add("POST", "/session", login, public=True)
    router.add("DELETE", "/session", logout, before_password_change=True)
    router.add("GET", "/me", me, before_password_change=True)
    router.add("POST", "/password", change_password, before_password_change=True)
