"""The admin API under /admin/api/: session auth in front of the control-plane routes.

Each area (a *_routes.py class) registers its handlers with ``register(router)``; this module
authenticates the caller, enforces first-login password rotation, and turns
results and errors (HTTPError, and the domain errors of gateway_app.errors) into
JSON responses.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway_app.admin.cookie import SESSION_COOKIE, read_cookie
from gateway_app.admin.origin import cross_origin_reason, is_json
from gateway_app.admin.router import AdminArea, AdminRequest, AdminResponse, AdminRouter
from gateway_app.admin.sessions import authenticate
from gateway_app.errors import DOMAIN_ERRORS, as_http_error
from gateway_app.http import HTTPError, Receive, Scope, Send, bearer_token, header, send_error, send_json
from gateway_app.storage import Database

_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _session_token(scope: Scope) -> str | None:
    return bearer_token(scope) or read_cookie(scope, SESSION_COOKIE)


def require_browser_write_is_same_origin(scope: Scope) -> None:
    """Refuse a browser write that could have been forged by another site (CSRF).

    JSON only (a foreign page cannot send application/json without a CORS preflight this
    server never grants) and a same-origin ``Origin`` (or ``Referer``).
    """
    reason = cross_origin_reason(scope)
    if reason is not None:
        raise HTTPError(
            403,
            f"cross-origin write refused: {reason}. Browser sessions may write only from this "
            "server's own pages; scripts and tools send 'Authorization: Bearer <token>' instead",
            "cross_origin_refused",
            "permission_error",
        )
    if not is_json(scope):
        raise HTTPError(
            415,
            "admin API writes from a browser session must be sent as Content-Type: application/json",
            "unsupported_media_type",
            param="content-type",
        )


class AdminAPI:
    def __init__(self, db: Database, areas: Iterable[AdminArea]):
        self._db = db
        self.router = AdminRouter()
        for area in areas:
            area.register(self.router)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            route, params = self.router.match(scope["method"], scope["path"])
            request = AdminRequest(scope, receive, params)
            if scope["method"] in _UNSAFE_METHODS and not bearer_token(scope):
                # Cookie-authenticated writes, and the public login when a browser sends it (login CSRF).
                browser = (
                    header(scope, b"origin") is not None
                    if route.public
                    else read_cookie(scope, SESSION_COOKIE)
                )
                if browser:
                    require_browser_write_is_same_origin(scope)
            if not route.public:
                request.principal = await self._principal(scope)
                if request.principal.must_change_password and not route.before_password_change:
                    raise HTTPError(
                        403,
                        "this admin must change the first-login password before anything else: "
                        "POST /admin/api/password",
                        "password_change_required",
                        "permission_error",
                    )
            response: AdminResponse = await route.handler(request)
        except DOMAIN_ERRORS as exc:
            await send_error(send, as_http_error(exc), [(b"cache-control", b"no-store")])
            return
        except HTTPError as error:
            await send_error(send, error, [(b"cache-control", b"no-store")])
            return
        await send_json(
            send, response.status, response.payload, [(b"cache-control", b"no-store"), *response.headers]
        )

    async def _principal(self, scope: Scope):
        token = _session_token(scope)
        principal = await authenticate(self._db, token) if token else None
        if principal is None:
            raise HTTPError(
                401,
                "admin session required: log in with POST /admin/api/session and send the token as "
                "'Authorization: Bearer <token>' (or the gw_session cookie); sessions expire",
                "session_required",
                "authentication_error",
            )
        return principal
