"""The admin UI's pages: each view reads through, and each action acts through, the control plane.

A view renders a page from the request and the outcome of an action (a notice,
an error, a secret shown once); an action changes something with the same
function the JSON admin API and the CLI call (accounts, keys, reports,
provider_control, sessions) and returns that outcome.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode

from gateway_app import accounts, keys, reports
from gateway_app.admin import sessions
from gateway_app.admin.cookie import SESSION_COOKIE, session_cookie, set_cookie
from gateway_app.admin.origin import served_over_tls
from gateway_app.admin.router import AdminPrincipal
from gateway_app.admin_ui.charts import bar_chart
from gateway_app.admin_ui.security import LOGIN_CSRF_COOKIE, new_login_csrf_token
from gateway_app.budgets import WINDOWS
from gateway_app.clock import now_ms
from gateway_app.config import GatewaySettings, parse_duration
from gateway_app.http import Headers, Scope
from gateway_app.provider_control import ProviderControl
from gateway_app.readiness import Readiness
from gateway_app.request_log import RequestLogWriter
from gateway_app.storage import Database

HOUR_MS = 3_600_000
LOG_PAGE_SIZE = 50
STATUS_FILTERS = ("2xx", "4xx", "5xx", "error")


@dataclass
class UIRequest:
    scope: Scope
    params: dict[str, str]
    principal: AdminPrincipal | None = None
    csrf_token: str = ""
    form: dict[str, list[str]] = field(default_factory=dict)

    @property
    def query(self) -> dict[str, str]:
        return {k: v for k, v in parse_qsl(self.scope.get("query_string", b"").decode("latin-1")) if v}

    def field(self, name: str) -> str:
        return self.form.get(name, [""])[0].strip()

    def fields(self, name: str) -> list[str]:
        return [v for v in self.form.get(name, []) if v]

    @property
    def client_addr(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else "unknown"

    @property
    def admin(self) -> AdminPrincipal:
        assert self.principal is not None, "page is public but reads the principal"
        return self.principal


@dataclass
class Page:
    template: str
    context: dict[str, Any]
    status: int = 200
    headers: Headers = field(default_factory=list)


@dataclass
class Redirect:
    location: str
    headers: Headers = field(default_factory=list)


Outcome = dict[str, Any]
View = Callable[[UIRequest, Outcome], Awaitable[Page | Redirect]]
Action = Callable[[UIRequest], Awaitable[Outcome | Redirect]]


def _page(request: UIRequest, template: str, section: str, outcome: Outcome, **context: Any) -> Page:
    me = request.principal
    return Page(
        template,
        {
            "me": me.email if me else None,
            "must_change_password": bool(me and me.must_change_password),
            "csrf_token": request.csrf_token,
            "section": section,
            **outcome,
            **context,
        },
    )


def _utc(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _usd(value: float | None) -> str:
    return "" if value is None else f"${value:,.4f}"


FILTERS = {"utc": _utc, "usd": _usd}


class Pages:
    """Every page and form, over the parts of the started gateway they read and act through."""

    def __init__(
        self,
        settings: GatewaySettings,
        db: Database,
        readiness: Readiness,
        writer: RequestLogWriter,
        control: ProviderControl,
    ):
        self._settings = settings
        self._db = db
        self._readiness = readiness
        self._writer = writer
        self._control = control
        self._ttl = settings.auth.session_ttl_seconds
        self._login_limits = sessions.LoginLimits.of(settings.auth)
        self._model_names = [m.name for m in settings.models]

    def routes(self) -> list[tuple[str, str, str, View, Action | None]]:
        """(method, path under /admin, access, view, action) of every page and form."""
        disable_account = partial(self.switch_account, True)
        enable_account = partial(self.switch_account, False)
        disable_provider = partial(self.switch_provider, False)
        enable_provider = partial(self.switch_provider, True)
        disable_route = partial(self.switch_route, False)
        enable_route = partial(self.switch_route, True)
        return [
            ("GET", "", "public", self.home, None),
            ("GET", "/", "public", self.home, None),
            ("GET", "/login", "public", self.login_view, None),
            ("POST", "/login", "public", self.login_view, self.login),
            ("GET", "/password", "password", self.password_view, None),
            ("POST", "/password", "password", self.password_view, self.change_password),
            ("POST", "/logout", "password", self.password_view, self.logout),
            ("GET", "/overview", "admin", self.overview_view, None),
            ("GET", "/accounts", "admin", self.accounts_view, None),
            ("POST", "/accounts", "admin", self.accounts_view, self.create_account),
            ("POST", "/accounts/{name}/budget", "admin", self.accounts_view, self.set_budget),
            ("POST", "/accounts/{name}/disable", "admin", self.accounts_view, disable_account),
            ("POST", "/accounts/{name}/enable", "admin", self.accounts_view, enable_account),
            ("GET", "/keys", "admin", self.keys_view, None),
            ("POST", "/keys", "admin", self.keys_view, self.create_key),
            ("POST", "/keys/{public_id}/revoke", "admin", self.keys_view, self.revoke_key),
            ("POST", "/keys/{public_id}/rotate", "admin", self.keys_view, self.rotate_key),
            ("GET", "/logs", "admin", self.logs_view, None),
            ("GET", "/logs/{id}", "admin", self.log_detail_view, None),
            ("GET", "/spend", "admin", self.spend_view, None),
            ("GET", "/providers", "admin", self.providers_view, None),
            ("POST", "/providers/{name}/disable", "admin", self.providers_view, disable_provider),
            ("POST", "/providers/{name}/enable", "admin", self.providers_view, enable_provider),
            ("POST", "/providers/{name}/reset-circuit", "admin", self.providers_view, self.reset_provider),
            ("POST", "/providers/{name}/health-check", "admin", self.providers_view, self.health_check),
            ("POST", "/routes/disable", "admin", self.providers_view, disable_route),
            ("POST", "/routes/enable", "admin", self.providers_view, enable_route),
            ("POST", "/routes/reset-circuit", "admin", self.providers_view, self.reset_route),
        ]

    # --- login, first-login password change, logout -----------------------------------------

    async def home(self, request: UIRequest, outcome: Outcome) -> Redirect:
        return Redirect("/admin/overview")

    async def login_view(self, request: UIRequest, outcome: Outcome) -> Page:
        token = new_login_csrf_token()
        page = Page(
            "login.html",
            {"csrf_token": token, "email": request.field("email"), "section": "login", **outcome},
        )
        page.headers.append(
            set_cookie(LOGIN_CSRF_COOKIE, token, 600, served_over_tls(request.scope), "/admin/login")
        )
        return page

    async def login(self, request: UIRequest) -> Outcome | Redirect:
        try:
            session = await sessions.login(
                self._db,
                self._login_limits,
                request.field("email"),
                request.form.get("password", [""])[0],
                request.client_addr,
                self._ttl,
            )
        except sessions.LoginThrottled as exc:
            return {"error": str(exc), "status": 429}
        except sessions.LoginUnavailable:
            unavailable = "login is unavailable: the gateway could not record the attempt; retry shortly"
            return {"error": unavailable, "status": 503}
        except sessions.InvalidCredentials:
            return {"error": "invalid email or password", "status": 401}
        target = "/admin/password" if session.must_change_password else "/admin/overview"
        return Redirect(
            target,
            [
                session_cookie(session.token, self._ttl, request.scope),
                set_cookie(LOGIN_CSRF_COOKIE, "", 0, served_over_tls(request.scope), "/admin/login"),
            ],
        )

    async def password_view(self, request: UIRequest, outcome: Outcome) -> Page:
        return _page(request, "password.html", "password", outcome)

    async def change_password(self, request: UIRequest) -> Outcome | Redirect:
        try:
            session = await sessions.change_password(
                self._db,
                request.admin,
                request.form.get("current_password", [""])[0],
                request.form.get("new_password", [""])[0],
                request.client_addr,
                self._ttl,
            )
        except sessions.WeakPassword as exc:
            return {"error": str(exc), "status": 400}
        except sessions.InvalidCredentials:
            return {"error": "the current password is wrong", "status": 401}
        return Redirect("/admin/overview", [session_cookie(session.token, self._ttl, request.scope)])

    async def logout(self, request: UIRequest) -> Redirect:
        await sessions.logout(self._db, request.admin.session_id)
        return Redirect("/admin/login", [set_cookie(SESSION_COOKIE, "", 0, served_over_tls(request.scope))])

    # --- overview ----------------------------------------------------------------------------

    async def overview_view(self, request: UIRequest, outcome: Outcome) -> Page:
        ready, readiness = await self._readiness.check()
        now = now_ms()
        writer = self._writer
        return _page(
            request,
            "overview.html",
            "overview",
            outcome,
            ready=ready,
            readiness=readiness,
            traffic=await reports.traffic(self._db, now - HOUR_MS, now),
            logging_mode=self._settings.request_logging.mode,
            queue={"depth": writer.depth, "dropped": writer.dropped},
            providers=self._control.describe(),
        )

    # --- service accounts ---------------------------------------------------------------------

    def budget_from_form(self, request: UIRequest) -> tuple[str, int] | None:
        window, limit = request.field("budget_window"), request.field("budget_limit_usd")
        if not window and not limit:
            return None
        try:
            amount = float(limit)
        except ValueError:
            raise ValueError("budget limit must be a number of US dollars, like 25 or 12.50") from None
        return accounts.parse_budget({"window": window, "limit_usd": amount})

    async def accounts_view(self, request: UIRequest, outcome: Outcome) -> Page:
        listed = await accounts.list_service_accounts(self._db)
        return _page(request, "accounts.html", "accounts", outcome, accounts=listed, windows=WINDOWS)

    async def create_account(self, request: UIRequest) -> Outcome:
        created = await accounts.create_service_account(
            self._db, request.field("name"), self.budget_from_form(request)
        )
        return {"notice": f"service account {created['name']} created"}

    async def set_budget(self, request: UIRequest) -> Outcome:
        account = await accounts.set_budget(self._db, request.params["name"], self.budget_from_form(request))
        return {"notice": f"budget of {account['name']} saved"}

    async def switch_account(self, disabled: bool, request: UIRequest) -> Outcome:
        account = await accounts.set_disabled(self._db, request.params["name"], disabled)
        refresh = self._settings.auth.key_cache_refresh_seconds
        state = "disabled: its keys stop" if disabled else "enabled: its keys work again"
        return {"notice": f"{account['name']} {state} within {refresh:g}s on every replica"}

    # --- keys ----------------------------------------------------------------------------------

    async def keys_view(self, request: UIRequest, outcome: Outcome) -> Page:
        include_revoked = request.query.get("include_revoked") == "true"
        return _page(
            request,
            "keys.html",
            "keys",
            outcome,
            keys=await keys.list_keys(self._db, include_revoked),
            include_revoked=include_revoked,
            account_names=[a["name"] for a in await accounts.list_service_accounts(self._db)],
            models=self._model_names,
            now=now_ms(),
            refresh_seconds=self._settings.auth.key_cache_refresh_seconds,
        )

    async def create_key(self, request: UIRequest) -> Outcome:
        grants = "all" if request.field("grant") != "some" else request.fields("models")
        expires_in = request.field("expires_in")
        secret, created = await keys.create_key(
            self._db,
            request.field("service_account"),
            request.field("name"),
            keys.validate_grants(grants, self._model_names),
            parse_duration(expires_in) if expires_in else None,
        )
        return {"secret": secret, "secret_key": created, "notice": f"key gwk_{created['public_id']} created"}

    async def revoke_key(self, request: UIRequest) -> Outcome:
        revoked = await keys.revoke_active_key(
            self._db, keys.normalize_public_id(request.params["public_id"])
        )
        refresh = self._settings.auth.key_cache_refresh_seconds
        return {
            "notice": f"key gwk_{revoked['public_id']} revoked; every replica refuses it within {refresh:g}s"
        }

    async def rotate_key(self, request: UIRequest) -> Outcome:
        grace = request.field("revoke_old_after")
        after = parse_duration(grace) if grace else None
        secret, new, old = await keys.rotate_key(
            self._db, keys.normalize_public_id(request.params["public_id"]), after
        )
        fate = "stays active until revoked" if after is None else f"is revoked in {grace}"
        return {
            "secret": secret,
            "secret_key": new,
            "notice": f"gwk_{old['public_id']} rotated to gwk_{new['public_id']}; the old key {fate}",
        }

    # --- request logs ------------------------------------------------------------------------

    async def logs_view(self, request: UIRequest, outcome: Outcome) -> Page:
        filters = {
            k: v
            for k, v in request.query.items()
            if k in ("since", "until", "service_account", "model", "status", "before_id")
        }
        rows: list[dict[str, Any]] = []
        status = 200
        try:
            rows = await reports.list_request_logs(self._db, {**filters, "limit": str(LOG_PAGE_SIZE)})
        except ValueError as exc:
            outcome = {**outcome, "error": str(exc)}
            status = 400
        older = None
        if len(rows) == LOG_PAGE_SIZE:
            older = urlencode({**filters, "before_id": rows[-1]["id"]})
        page = _page(
            request,
            "logs.html",
            "logs",
            outcome,
            rows=rows,
            filters=filters,
            account_names=[a["name"] for a in await accounts.list_service_accounts(self._db)],
            models=self._model_names,
            statuses=STATUS_FILTERS,
            older=older,
        )
        page.status = status
        return page

    async def log_detail_view(self, request: UIRequest, outcome: Outcome) -> Page:
        detail = await reports.request_log_detail(self._db, request.params["id"])
        return _page(request, "log_detail.html", "logs", outcome, log=detail)

    # --- spend ---------------------------------------------------------------------------------

    async def spend_view(self, request: UIRequest, outcome: Outcome) -> Page:
        query = request.query
        group_by = query.get("group_by", "service_account")
        measure = "requests" if query.get("measure") == "requests" else "cost_usd"
        filters = {k: v for k, v in query.items() if k in ("since", "until")}
        rows: list[dict[str, Any]] = []
        status = 200
        try:
            rows = await reports.spend_report(self._db, group_by, filters)
        except ValueError as exc:
            outcome = {**outcome, "error": str(exc)}
            status = 400
        page = _page(
            request,
            "spend.html",
            "spend",
            outcome,
            rows=rows,
            group_by=group_by,
            tabs=[
                (g, urlencode({"group_by": g, "measure": measure, **filters})) for g in reports.SPEND_GROUPS
            ],
            measure=measure,
            filters=filters,
            chart=bar_chart(
                [(str(r["group"]), float(r[measure])) for r in rows], money=measure == "cost_usd"
            ),
        )
        page.status = status
        return page

    # --- providers and routes ------------------------------------------------------------------

    async def providers_view(self, request: UIRequest, outcome: Outcome) -> Page:
        return _page(
            request,
            "providers.html",
            "providers",
            outcome,
            providers=self._control.describe(),
            refresh_seconds=self._settings.resilience.state_refresh_seconds,
        )

    async def switch_provider(self, enabled: bool, request: UIRequest) -> Outcome:
        done = await self._control.set_provider_enabled(request.params["name"], enabled, request.admin.email)
        return {"notice": f"provider {done['name']} {'enabled' if enabled else 'disabled'}"}

    async def reset_provider(self, request: UIRequest) -> Outcome:
        done = await self._control.reset_provider(request.params["name"], request.admin.email)
        return {"notice": f"circuits of {done['name']} reset: {', '.join(done['reset']) or 'no routes'}"}

    async def health_check(self, request: UIRequest) -> Outcome:
        probe = await self._control.health_check(request.params["name"])
        return {"probe": {"provider": request.params["name"], **probe}}

    async def switch_route(self, enabled: bool, request: UIRequest) -> Outcome:
        done = await self._control.set_route_enabled(request.field("key"), enabled, request.admin.email)
        return {"notice": f"route {done['key']} {'enabled' if enabled else 'disabled'}"}

    async def reset_route(self, request: UIRequest) -> Outcome:
        done = await self._control.reset_route(request.field("key"), request.admin.email)
        return {"notice": f"circuit of route {done['key']} reset"}
