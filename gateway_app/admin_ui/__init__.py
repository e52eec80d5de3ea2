"""The admin UI at /admin: server-rendered HTML over the same control-plane functions as /admin/api.

This module is the ASGI side: it matches a page, checks the session, the
forced first-login password change, the form's origin and CSRF token, then
renders what the page handler (gateway_app.admin_ui.pages) returns. Pages
work without JavaScript; the one script is the copy button of a new key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader

from gateway_app import __version__
from gateway_app.admin.cookie import SESSION_COOKIE, read_cookie
from gateway_app.admin.origin import cross_origin_reason
from gateway_app.admin.router import match_route, path_pattern
from gateway_app.admin.sessions import authenticate
from gateway_app.admin_ui.pages import FILTERS, Action, Page, Pages, Redirect, UIRequest, View
from gateway_app.admin_ui.security import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SECURITY_HEADERS,
    session_csrf_token,
    tokens_match,
)
from gateway_app.errors import DOMAIN_ERRORS, NotFound, as_http_error
from gateway_app.http import HTTPError, Receive, Scope, Send, read_body, send_response
from gateway_app.storage import Database

PREFIX = "/admin"
_HTML = b"text/html; charset=utf-8"
_MAX_FORM_BYTES = 64 * 1024
_STATIC_TYPES = {".css": b"text/css; charset=utf-8", ".js": b"text/javascript; charset=utf-8"}

# public: no session; password: allowed before the first-login password change; admin: after it.
Access = Literal["public", "password", "admin"]


@dataclass(frozen=True)
class _Route:
    method: str
    pattern: re.Pattern[str]
    access: Access
    view: View
    action: Action | None


class AdminUI:
    def __init__(self, db: Database, pages: Pages):
        self._db = db
        self._templates = Environment(
            loader=PackageLoader("gateway_app.admin_ui", "templates"), autoescape=True, trim_blocks=True
        )
        self._templates.filters.update(FILTERS)
        static = resources.files("gateway_app.admin_ui") / "static"
        self._static = {
            f"{PREFIX}/static/{f.name}": (f.read_bytes(), _STATIC_TYPES[f.name[f.name.rfind(".") :]])
            for f in static.iterdir()
            if f.name[f.name.rfind(".") :] in _STATIC_TYPES
        }
        self._routes = [
            _Route(method, path_pattern(PREFIX + path), access, view, action)
            for method, path, access, view, action in pages.routes()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self._render(send, Page("error.html", {"error": f"no page {path}"}, status=404))
            return
        if scope["method"] == "GET" and path in self._static:
            body, content_type = self._static[path]
            await send_response(
                send, 200, body, content_type, [*SECURITY_HEADERS, (b"cache-control", b"max-age=300")]
            )
            return
        try:
            result = await self._dispatch(scope, receive)
        except HTTPError as error:
            result = Page("error.html", {"error": error.message}, status=error.status)
        except NotFound as exc:  # what a page shows is gone
            error = as_http_error(exc)
            result = Page("error.html", {"error": error.message}, status=error.status)
        if isinstance(result, Redirect):
            await send_response(
                send,
                303,
                b"",
                _HTML,
                [*SECURITY_HEADERS, (b"location", result.location.encode()), *result.headers],
            )
        else:
            await self._render(send, result)

    async def _dispatch(self, scope: Scope, receive: Receive) -> Page | Redirect:
        route, params = match_route(self._routes, scope["method"], scope["path"], f"no page {scope['path']}")
        request = UIRequest(scope, params)
        if route.method == "POST" and cross_origin_reason(scope) is not None:
            raise HTTPError(403, "form refused: it was not posted from this site (Origin check)", "csrf")
        if route.access != "public":
            token = read_cookie(scope, SESSION_COOKIE)
            request.principal = await authenticate(self._db, token) if token else None
            if request.principal is None:
                return Redirect(f"{PREFIX}/login")
            assert token is not None
            request.csrf_token = session_csrf_token(token)
            if request.principal.must_change_password and route.access == "admin":
                if route.method == "GET":
                    return Redirect(f"{PREFIX}/password")
                raise HTTPError(403, "change the first-login password before anything else", "password")
        if route.method == "POST":
            request.form = _parse_form(await read_body(receive, _MAX_FORM_BYTES))
            expected = (
                read_cookie(scope, LOGIN_CSRF_COOKIE) if route.access == "public" else request.csrf_token
            )
            if not tokens_match(expected, request.field(CSRF_FIELD)):
                raise HTTPError(
                    403, "form refused: its CSRF token is missing or stale; reload the page and retry", "csrf"
                )
        if route.action is None:
            return await route.view(request, {})
        try:
            outcome = await route.action(request)
        except DOMAIN_ERRORS as exc:
            error = as_http_error(exc)
            outcome = {"error": error.message, "status": error.status}
        if isinstance(outcome, Redirect):
            return outcome
        page = await route.view(request, outcome)
        if isinstance(page, Page) and "status" in outcome:
            page.status = outcome["status"]
        return page

    async def _render(self, send: Send, page: Page) -> None:
        context = {"version": __version__, "prefix": PREFIX, "csrf_field": CSRF_FIELD, **page.context}
        body = self._templates.get_template(page.template).render(context).encode()
        await send_response(
            send,
            page.status,
            body,
            _HTML,
            [*SECURITY_HEADERS, (b"cache-control", b"no-store"), *page.headers],
        )


def _parse_form(body: bytes) -> dict[str, list[str]]:
    form: dict[str, list[str]] = {}
    for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        form.setdefault(name, []).append(value)
    return form
