"""Routing and request parsing for the admin API (JSON, templated paths)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, unquote

from gateway_app.http import (
    Headers,
    HTTPError,
    Receive,
    Scope,
    header,
    invalid_request,
    parse_json,
    parse_json_object,
    read_body,
)

_PARAM = re.compile(r"\{(\w+)\}")
_MAX_ADMIN_BODY = 1024 * 1024
# Bodies read leniently (optional_json, json_value: revoke, rotate, flush, service accounts) keep
# the smaller cap they have always had.
_MAX_OPTIONAL_BODY = 64 * 1024


def path_pattern(template: str) -> re.Pattern[str]:
    """'/admin/keys/{public_id}/revoke' -> a regex with one named group per {param} (no '/' inside)."""
    pieces = _PARAM.split(template)  # literal, name, literal, name, ...
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(pieces))
    return re.compile(f"^{regex}$")


class _Route(Protocol):
    method: str
    pattern: re.Pattern[str]


RouteT = TypeVar("RouteT", bound=_Route)


def match_route(routes: list[RouteT], method: str, path: str, missing: str) -> tuple[RouteT, dict[str, str]]:
    """The route for method and path, with its path parameters; 405 if only the method is wrong."""
    allowed = False
    for route in routes:
        found = route.pattern.match(path)
        if found is None:
            continue
        if route.method == method:
            return route, {k: unquote(v) for k, v in found.groupdict().items()}
        allowed = True
    if allowed:
        raise HTTPError(405, f"{method} is not allowed on {path}", "method_not_allowed")
    raise HTTPError(404, missing, "not_found")


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
    _raw: bytes | None = field(default=None, repr=False)

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.scope.get("query_string", b"").decode("latin-1")))

    @property
    def client_addr(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else "unknown"

    def header(self, name: bytes) -> bytes | None:
        return header(self.scope, name)

    async def _read(self, limit: int) -> bytes:
        if self._raw is None:  # the body can be received once only
            self._raw = await read_body(self.receive, limit)
        return self._raw

    async def json(self) -> dict[str, Any]:
        """The body as a JSON object: 400 when it is empty or anything else."""
        return parse_json_object(await self._read(_MAX_ADMIN_BODY))

    async def json_value(self) -> Any:
        """The body as any JSON value (``null`` included); None when there is no body."""
        raw = await self._read(_MAX_OPTIONAL_BODY)
        return parse_json(raw) if raw.strip() else None

    async def optional_json(self) -> dict[str, Any]:
        """The body as a JSON object, or {} when there is none (calls whose fields are all optional)."""
        value = await self.json_value()
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise invalid_request("request body must be a JSON object")
        return value

    @property
    def admin(self) -> AdminPrincipal:
        assert self.principal is not None, "route is public but reads the principal"
        return self.principal


def text_field(body: dict[str, Any], name: str) -> str:
    """A required non-empty string field of a body, stripped."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise invalid_request(f"'{name}' is required and must be a non-empty string", param=name)
    return value.strip()


@dataclass
class AdminResponse:
    status: int
    payload: Any
    headers: Headers = field(default_factory=list)


AdminHandler = Callable[[AdminRequest], Awaitable[AdminResponse]]


@dataclass
class _AdminRoute:
    method: str
    pattern: re.Pattern[str]
    handler: AdminHandler
    public: bool
    # Allowed while the admin still has to change the first-login password.
    before_password_change: bool


class AdminArea(Protocol):
    """A group of admin routes (a *_routes.py class), holding only the parts of the gateway it uses."""

    def register(self, router: AdminRouter) -> None: ...


class AdminRouter:
    def __init__(self, prefix: str = "/admin/api"):
        self.prefix = prefix
        self._routes: list[_AdminRoute] = []

    def add(
        self,
        method: str,
        path: str,
        handler: AdminHandler,
        *,
        public: bool = False,
        before_password_change: bool = False,
    ) -> None:
        self._routes.append(
            _AdminRoute(method, path_pattern(self.prefix + path), handler, public, before_password_change)
        )

    def match(self, method: str, path: str) -> tuple[_AdminRoute, dict[str, str]]:
        return match_route(self._routes, method, path, f"no admin route {method} {path}")
