"""Routing and request parsing for the admin API (JSON, templated paths)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from gateway_app.http import Headers, HTTPError, Receive, Scope, header, parse_json_object, read_body

_PARAM = re.compile(r"\{(\w+)\}")
_MAX_ADMIN_BODY = 1024 * 1024


@dataclass
class AdminPrincipal:
    admin_user_id: int
    email: str
    session_id: int
    session_expires_at: int
    must_change_password: bool


@dataclass
class AdminRequest:
    scope: Scope
    receive: Receive
    params: dict[str, str]
    principal: AdminPrincipal | None = None
    _body: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))

    @property
    def client_addr(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else "unknown"

    def header(self, name: bytes) -> bytes | None:
        return header(self.scope, name)

    async def json(self) -> dict[str, Any]:
        if self._body is None:
            self._body = parse_json_object(await read_body(self.receive, _MAX_ADMIN_BODY))
        return self._body

    @property
    def admin(self) -> AdminPrincipal:
        assert self.principal is not None, "route is public but reads the principal"
        return self.principal


@dataclass
class AdminResponse:
    status: int
    payload: Any
    headers: Headers = field(default_factory=list)


AdminHandler = Callable[[AdminRequest], Awaitable[AdminResponse]]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: AdminHandler
    public: bool
    # Allowed while the admin still has to change the first-login password.
    before_password_change: bool


class AdminRouter:
    def __init__(self, prefix: str = "/admin/api"):
        self.prefix = prefix
        self._routes: list[_Route] = []

    def add(
        self,
        method: str,
        path: str,
        handler: AdminHandler,
        *,
        public: bool = False,
        before_password_change: bool = False,
    ) -> None:
        pieces = _PARAM.split(self.prefix + path)  # literal, name, literal, name, ...
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(pieces))
        self._routes.append(_Route(method, re.compile(f"^{regex}$"), handler, public, before_password_change))

    def match(self, method: str, path: str) -> tuple[_Route, dict[str, str]]:
        allowed = False
        for route in self._routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if route.method == method:
                return route, {k: unquote(v) for k, v in found.groupdict().items()}
            allowed = True
        if allowed:
            raise HTTPError(405, f"{method} is not allowed on {path}", "method_not_allowed")
        raise HTTPError(404, f"no admin route {method} {path}", "not_found")
