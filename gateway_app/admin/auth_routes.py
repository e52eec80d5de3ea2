"""Admin routes for sessions and passwords."""

from __future__ import annotations

from typing import Any

from gateway_app.admin import sessions
from gateway_app.admin.cookie import session_cookie
from gateway_app.admin.router import AdminRequest, AdminResponse, AdminRouter
from gateway_app.config import AuthSettings
from gateway_app.http import HTTPError, invalid_request
from gateway_app.storage import Database

_GENERIC_LOGIN_ERROR = "invalid email or password"
_RETRY_UNAVAILABLE_SECONDS = b"5"


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise invalid_request(f"'{name}' is required and must be a non-empty string", param=name)
    return value


class AuthRoutes:
    def __init__(self, db: Database, auth: AuthSettings):
        self._db = db
        self._ttl = auth.session_ttl_seconds
        self._limits = sessions.LoginLimits.of(auth)

    def register(self, router: AdminRouter) -> None:
        router.add("POST", "/session", self.login, public=True)
        router.add("DELETE", "/session", self.logout, before_password_change=True)
        router.add("GET", "/me", self.me, before_password_change=True)
        router.add("POST", "/password", self.change_password, before_password_change=True)

    async def login(self, request: AdminRequest) -> AdminResponse:
        body = await request.json()
        try:
            session = await sessions.login(
                self._db,
                self._limits,
                _text(body, "email"),
                _text(body, "password"),
                request.client_addr,
                self._ttl,
            )
        except sessions.LoginThrottled as exc:
            raise HTTPError(
                429,
                str(exc),
                "login_throttled",
                "rate_limit_error",
                headers=[(b"retry-after", str(exc.retry_after_seconds).encode())],
            ) from None
        except sessions.LoginUnavailable:
            raise HTTPError(
                503,
                "login is unavailable: the gateway could not record the attempt in its database; "
                "retry shortly, and check the database if it persists",
                "login_unavailable",
                "api_error",
                headers=[(b"retry-after", _RETRY_UNAVAILABLE_SECONDS)],
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
            [session_cookie(session.token, self._ttl, request.scope)],
        )

    async def logout(self, request: AdminRequest) -> AdminResponse:
        await sessions.logout(self._db, request.admin.session_id)
        return AdminResponse(200, {"status": "logged_out"}, [session_cookie("", 0, request.scope)])

    async def me(self, request: AdminRequest) -> AdminResponse:
        admin = request.admin
        return AdminResponse(
            200,
            {
                "email": admin.email,
                "must_change_password": admin.must_change_password,
                "session_expires_at": admin.session_expires_at,
            },
        )

    async def change_password(self, request: AdminRequest) -> AdminResponse:
        body = await request.json()
        try:
            session = await sessions.change_password(
                self._db,
                request.admin,
                _text(body, "current_password"),
                _text(body, "new_password"),
                request.client_addr,
                self._ttl,
            )
        except sessions.WeakPassword as exc:
            raise HTTPError(400, str(exc), "weak_password", param="new_password") from None
        except sessions.InvalidCredentials:
            raise HTTPError(
                401, "the current password is wrong", "invalid_credentials", "authentication_error"
            ) from None
        return AdminResponse(
            200,
            {"token": session.token, "expires_at": session.expires_at},
            [session_cookie(session.token, self._ttl, request.scope)],
        )
