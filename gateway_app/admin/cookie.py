"""The admin session cookie: one name and one set of attributes for the JSON API and the admin UI."""

from __future__ import annotations

from gateway_app.admin.origin import served_over_tls
from gateway_app.http import Scope, header

SESSION_COOKIE = "gw_session"


def read_cookie(scope: Scope, name: str) -> str | None:
    cookie = header(scope, b"cookie")
    if cookie:
        for part in cookie.decode("latin-1").split(";"):
            key, _, value = part.strip().partition("=")
            if key == name and value:
                return value
    return None


def set_cookie(
    name: str, value: str, max_age: int, secure: bool, path: str = "/admin"
) -> tuple[bytes, bytes]:
    attributes = f"{name}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={max_age}"
    return (b"set-cookie", (attributes + ("; Secure" if secure else "")).encode())


def session_cookie(token: str, max_age: int, scope: Scope) -> tuple[bytes, bytes]:
    return set_cookie(SESSION_COOKIE, token, max_age, served_over_tls(scope))
