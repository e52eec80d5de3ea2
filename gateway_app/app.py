"""The ASGI application: lifecycle of the gateway's parts and request dispatch."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from gateway_app import __version__, migrations
from gateway_app.admin import AdminAPI
from gateway_app.admin.sessions import delete_expired_throttle_rows
from gateway_app.admin_ui import AdminUI
from gateway_app.background import Periodic
from gateway_app.budgets import BudgetTracker
from gateway_app.config import GatewaySettings
from gateway_app.http import HTTPError, Receive, Scope, Send, send_error, send_json, send_response
from gateway_app.keys import KeyCache
from gateway_app.ledger_spool import LedgerSpool
from gateway_app.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway_app.metrics import RequestMetrics, build_registry, render
from gateway_app.provider_control import ProviderControl
from gateway_app.providers import Provider, build_provider
from gateway_app.proxy import DataPlane
from gateway_app.purge import PurgeScheduler
from gateway_app.ratelimit import RateLimiter, build_rate_limiter
from gateway_app.request_log import RequestLogWriter, default_spool_path
from gateway_app.resilience import OverridesSync
from gateway_app.response_cache import ResponseCache, build_response_cache
from gateway_app.routing import Router
from gateway_app.storage import Database, OneAtATime, connect
from gateway_app.telemetry import Telemetry

log = logging.getLogger("gateway.app")

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
_READY_TIMEOUT_SECONDS = 2.0


class Gateway:
    """Everything one gateway process runs, built from settings and started once."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.db: Database | None = None
        self.providers: dict[str, Provider] = {}
        self.keys: KeyCache | None = None
        self.router: Router | None = None
        self.writer: RequestLogWriter | None = None
        self.budgets: BudgetTracker | None = None
        self.purge: PurgeScheduler | None = None
        self.throttle_cleanup: Periodic | None = None
        self.data_plane: DataPlane | None = None
        self.metrics = RequestMetrics()
        self.metrics_registry = build_registry(self)
        self.overrides: OverridesSync | None = None
        self.limiter: RateLimiter | None = None
        self.telemetry: Telemetry | None = None
        self._provider_control: ProviderControl | None = None
        self.database_reachable = True  # as the last readiness check found it (a metric)
        self._readiness_checks = OneAtATime("readiness check")
        self.response_cache: ResponseCache | None = None  # only when a model opts in (`cache:`)

    @property
    def database(self) -> Database:
        """The connected database; only valid between start() and stop()."""
        if self.db is None:
            raise RuntimeError("the gateway has not started: no database yet")
        return self.db

    def provider_control(self) -> ProviderControl:
        """Operator actions on providers and routes; only valid between start() and stop()."""
        if self._provider_control is None:
            raise RuntimeError("the gateway has not started: no routes yet")
        return self._provider_control

    async def start(self) -> None:
        s = self.settings
        self.db = await connect(
            s.database.url.value, s.database.pool_min, s.database.pool_max, s.database.connect_timeout_seconds
        )
        status = await migrations.check(self.db)
        if not status.is_current:
            # serve's pre-flight applies or refuses before we get here; a race with
            # another release's migrator is the only way in, and it must not serve.
            raise migrations.MigrationError(
                f"database schema is at version {status.current_version}, this release needs "
                f"{status.latest_known}: run `gateway migrate --apply`"
            )
        self.providers = {p.name: build_provider(p, s.resilience) for p in s.providers}
        self.router = Router(s, self.providers)
        self.overrides = OverridesSync(self.db, self.router, s.resilience)
        await self.overrides.start()
        self._provider_control = ProviderControl(s.providers, self.router, self.overrides, self.db)
        self.limiter = build_rate_limiter(s.rate_limits)
        self.telemetry = Telemetry(s.server, self.metrics, self.router)
        self.telemetry.start()
        self.keys = KeyCache(self.db, s.auth.key_cache_refresh_seconds)
        await self.keys.start()
        self.budgets = BudgetTracker(self.db)
        await self.budgets.start()
        spool_path = s.request_logging.spool_path
        spool = LedgerSpool(
            Path(spool_path) if spool_path else default_spool_path(s.database.url.value, s.server.port),
            s.request_logging.spool_max_bytes,
        )
        spool.open()  # before serving: a spool that cannot be opened or is taken refuses startup
        self.writer = RequestLogWriter(self.db, s.request_logging, spool, on_spend=self.budgets)
        self.writer.usage_observer = self.metrics.observe_usage
        await self.writer.start()
        self.response_cache = build_response_cache(s)
        self.data_plane = DataPlane(
            s,
            self.keys,
            self.router,
            self.writer,
            metrics=self.metrics,
            limiter=self.limiter,
            tracer=self.telemetry.tracer,
            budgets=self.budgets,
            cache=self.response_cache,
        )
        self.purge = PurgeScheduler(self.db, s.request_logging.purge)
        await self.purge.start()
        # The login throttle's table would otherwise keep one row per address ever seen.
        self.throttle_cleanup = Periodic(
            "auth-throttle-cleanup",
            s.auth.throttle_cleanup_seconds,
            partial(delete_expired_throttle_rows, self.db),
        )
        self.throttle_cleanup.start()

    async def stop(self) -> None:
        if self.throttle_cleanup:
            await self.throttle_cleanup.stop()
        if self.purge:
            await self.purge.stop()
        if self.keys:
            await self.keys.stop()
        if self.overrides:
            await self.overrides.stop()
        if self.budgets:
            await self.budgets.stop()
        if self.writer:
            await self.writer.stop()
        if self.telemetry:
            await self.telemetry.stop()
        if self.limiter:
            await self.limiter.close()
        if self.response_cache:
            await self.response_cache.close()
        for provider in self.providers.values():
            await provider.close()
        if self.db:
            await self.db.close()

    async def readiness(self) -> tuple[str, dict[str, Any]]:
        """("ready" | "degraded" | "not_ready", details). Degraded still serves (HTTP 200).

        The database is the log store and the control plane's source, not the data plane:
        while it is unreachable (down, hung, full) replicas serve from memory (keys, routes,
        budgets as last loaded) and spool ledger rows, so they stay in the load balancer.
        A database this release cannot run on (schema, missing database) is not ready.
        """
        details: dict[str, Any] = {"version": __version__}
        otel = self.telemetry.readiness() if self.telemetry else None
        if otel is not None:
            details["otel"] = otel  # a warning only: a missing collector never makes a replica unready
        if self.db is None:
            return "not_ready", {**details, "database": "not connected"}
        if self.writer is not None and self.writer.spool.pending:
            details["ledger_spool"] = f"{self.writer.spool.rows} ledger rows waiting for the database"
        try:
            status = await self._readiness_checks.run(migrations.check(self.db), _READY_TIMEOUT_SECONDS)
        except migrations.MigrationError as exc:
            return "not_ready", {**details, "database": "ok", "schema": str(exc)}
        except self.db.outage_errors as exc:
            self.database_reachable = False
            return "degraded", {
                **details,
                "database": f"unreachable ({exc.__class__.__name__}); serving from memory, ledger spooled",
            }
        except Exception as exc:
            return "not_ready", {**details, "database": f"unusable ({exc.__class__.__name__}: {exc})"}
        self.database_reachable = True
        details.update(
            database="ok",
            schema_version=status.database_version,
            schema_expected=status.latest_known,
        )
        if status.pending or status.ahead:
            details["schema"] = status.summary()
        # Ready on additive migrations of a newer release: during a rolling upgrade the
        # old replicas keep serving until they are replaced.
        if not status.is_current:
            return "not_ready", details
        if self.writer is not None and self.writer.degraded:
            details["database"] = "answers reads, but ledger writes fail (disk full?): ledger spooled"
            return "degraded", details
        return "ready", details


class GatewayApp:
    """ASGI entry point. Exact-path routes first, then prefix handlers (admin API)."""

    def __init__(self, settings: GatewaySettings):
        self.gateway = Gateway(settings)
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "/healthz"): self._healthz,
            ("GET", "/readyz"): self._readyz,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/v1/models"): self._operation("models"),
            ("POST", "/v1/chat/completions"): self._operation("chat"),
            ("POST", "/v1/embeddings"): self._operation("embeddings"),
        }
        # The UI owns the rest of /admin (it answers 404 itself for what it does not serve).
        self._prefixes: list[tuple[str, Handler]] = [
            ("/admin/api/", AdminAPI(self.gateway)),
            ("/admin", AdminUI(self.gateway)),
        ]

    def _operation(self, name: str) -> Handler:
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            assert self.gateway.data_plane is not None
            await self.gateway.data_plane.handle(name, scope, receive, send)

        return handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            handler = self._routes.get((scope["method"], scope["path"]))
            if handler is None:
                handler = self._by_prefix(scope)
            await handler(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _by_prefix(self, scope: Scope) -> Handler:
        path = scope["path"]
        for prefix, handler in self._prefixes:
            if path.startswith(prefix):
                return handler
        known_paths = {p for _, p in self._routes}
        return self._method_not_allowed if path in known_paths else self._not_found

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(send, HTTPError(404, f"no route for {scope['method']} {scope['path']}", "not_found"))

    async def _method_not_allowed(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_error(
            send, HTTPError(405, f"{scope['method']} is not allowed on {scope['path']}", "method_not_allowed")
        )

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, 200, b'{"status":"ok"}')

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, 200, render(self.gateway.metrics_registry), METRICS_CONTENT_TYPE)

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, details = await self.gateway.readiness()
        await send_json(send, 503 if status == "not_ready" else 200, {"status": status, **details})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.start()
                except Exception as exc:
                    log.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
