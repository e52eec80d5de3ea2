"""The ASGI application: lifecycle of the gateway's parts and request dispatch."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from gateway_app import migrations
from gateway_app.admin.accounts_routes import AccountsRoutes
from gateway_app.admin.api import AdminAPI
from gateway_app.admin.auth_routes import AuthRoutes
from gateway_app.admin.cache_routes import CacheRoutes
from gateway_app.admin.keys_routes import KeysRoutes
from gateway_app.admin.logs_routes import LogsRoutes
from gateway_app.admin.providers_routes import ProvidersRoutes
from gateway_app.admin.sessions import delete_expired_throttle_rows
from gateway_app.admin_ui import AdminUI
from gateway_app.admin_ui.pages import Pages
from gateway_app.background import Periodic
from gateway_app.budgets import BudgetTracker
from gateway_app.config import GatewaySettings
from gateway_app.http import HTTPError, Receive, Scope, Send, send_error, send_json, send_response
from gateway_app.keys import KeyCache
from gateway_app.ledger_spool import LedgerSpool
from gateway_app.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gateway_app.metrics import GatewayCollector, RequestMetrics, build_registry, render
from gateway_app.provider_control import ProviderControl
from gateway_app.providers import Provider, build_provider
from gateway_app.proxy import DataPlane
from gateway_app.purge import PurgeScheduler
from gateway_app.ratelimit import build_rate_limiter
from gateway_app.readiness import Readiness, not_started
from gateway_app.request_log import RequestLogWriter, default_spool_path
from gateway_app.resilience import OverridesSync
from gateway_app.response_cache import ResponseCache, build_response_cache, store_kind
from gateway_app.routing import Router
from gateway_app.storage import Database, connect
from gateway_app.telemetry import Telemetry

log = logging.getLogger("gateway.app")

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Started:
    """What a started gateway serves with, and what in-process tests inspect; none is ever None.

    ``response_cache`` is None only when no model opts in (``cache:``), a choice of the config.
    Background jobs (purge, throttle cleanup) are owned by the exit stack alone.
    """

    db: Database
    router: Router
    keys: KeyCache
    budgets: BudgetTracker
    writer: RequestLogWriter
    response_cache: ResponseCache | None
    data_plane: DataPlane
    readiness: Readiness
    admin_api: AdminAPI
    admin_ui: AdminUI
    metrics_registry: CollectorRegistry


async def _close_all(providers: dict[str, Provider]) -> None:
    for provider in providers.values():
        await provider.close()


class Gateway:
    """Everything one gateway process runs, built from settings and started once."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.metrics = RequestMetrics()
        self._started: Started | None = None
        self._running = AsyncExitStack()  # stops what start() started

    @property
    def started(self) -> Started:
        """The started parts; only valid between start() and stop()."""
        if self._started is None:
            raise RuntimeError("the gateway has not started")
        return self._started

    async def start(self) -> None:
        """Start every part, or stop the ones already started and raise.

        Stopping runs the background loops' stops first, then the parts', each last started
        first: the request-log writer's final flush then has the database to itself.
        """
        s = self.settings
        async with AsyncExitStack() as parts, AsyncExitStack() as loops:
            db = await connect(
                s.database.url.value,
                s.database.pool_min,
                s.database.pool_max,
                s.database.connect_timeout_seconds,
            )
            parts.push_async_callback(db.close)
            status = await migrations.check(db)
            if not status.is_current:
                # serve's pre-flight applies or refuses before we get here; a race with
                # another release's migrator is the only way in, and it must not serve.
                raise migrations.MigrationError(
                    f"database schema is at version {status.current_version}, this release needs "
                    f"{status.latest_known}: run `gateway migrate --apply`"
                )
            providers = {p.name: build_provider(p, s.resilience) for p in s.providers}
            parts.push_async_callback(_close_all, providers)
            router = Router(s, providers)
            overrides = OverridesSync(db, router, s.resilience)
            await overrides.start()
            loops.push_async_callback(overrides.stop)
            control = ProviderControl(s.providers, router, overrides, db)
            response_cache = build_response_cache(s)  # None when no model opts in (`cache:`)
            if response_cache is not None:
                parts.push_async_callback(response_cache.close)
            limiter = build_rate_limiter(s.rate_limits)  # None when no rate limit is configured
            if limiter is not None:
                parts.push_async_callback(limiter.close)
            telemetry = Telemetry(s.server, self.metrics, router)
            telemetry.start()
            parts.push_async_callback(telemetry.stop)
            keys = KeyCache(db, s.auth.key_cache_refresh_seconds)
            await keys.start()
            loops.push_async_callback(keys.stop)
            budgets = BudgetTracker(db)
            await budgets.start()
            loops.push_async_callback(budgets.stop)
            spool_path = s.request_logging.spool_path
            spool = LedgerSpool(
                Path(spool_path) if spool_path else default_spool_path(s.database.url.value, s.server.port),
                s.request_logging.spool_max_bytes,
            )
            spool.open()  # before serving: a spool that cannot be opened or is taken refuses startup
            writer = RequestLogWriter(db, s.request_logging, spool, on_spend=budgets)
            writer.usage_observer = self.metrics.observe_usage
            await writer.start()
            parts.push_async_callback(writer.stop)  # closes the spool
            data_plane = DataPlane(
                s,
                keys,
                router,
                writer,
                metrics=self.metrics,
                limiter=limiter,
                tracer=telemetry.tracer,
                budgets=budgets,
                cache=response_cache,
            )
            purge = PurgeScheduler(db, s.request_logging.purge)
            await purge.start()
            loops.push_async_callback(purge.stop)
            # The login throttle's table would otherwise keep one row per address ever seen.
            throttle_cleanup = Periodic(
                "auth-throttle-cleanup",
                s.auth.throttle_cleanup_seconds,
                partial(delete_expired_throttle_rows, db),
            )
            throttle_cleanup.start()
            loops.push_async_callback(throttle_cleanup.stop)
            readiness = Readiness(db, writer, telemetry)
            admin_api = AdminAPI(
                db,
                [
                    AuthRoutes(db, s.auth),
                    KeysRoutes(db, [m.name for m in s.models]),
                    ProvidersRoutes(control),
                    AccountsRoutes(db),
                    LogsRoutes(db, writer),
                    CacheRoutes(response_cache, store_kind(s), data_plane.handle),
                ],
            )
            collector = GatewayCollector(
                s,
                self.metrics,
                db=db,
                providers=providers,
                router=router,
                keys=keys,
                writer=writer,
                readiness=readiness,
                limiter=limiter,
                response_cache=response_cache,
            )
            self._started = Started(
                db=db,
                router=router,
                keys=keys,
                budgets=budgets,
                writer=writer,
                response_cache=response_cache,
                data_plane=data_plane,
                readiness=readiness,
                admin_api=admin_api,
                admin_ui=AdminUI(db, Pages(s, db, readiness, writer, control)),
                metrics_registry=build_registry(collector),
            )
            running = AsyncExitStack()
            running.push_async_exit(parts.pop_all())
            running.push_async_exit(loops.pop_all())
            self._running = running

    async def stop(self) -> None:
        await self._running.aclose()

    async def readiness(self) -> tuple[str, dict[str, Any]]:
        """("ready" | "degraded" | "not_ready", details): see Readiness.check."""
        if self._started is None:
            return not_started()
        return await self._started.readiness.check()


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
            ("/admin/api/", self._admin_api),
            ("/admin", self._admin_ui),
        ]

    def _operation(self, name: str) -> Handler:
        async def handler(scope: Scope, receive: Receive, send: Send) -> None:
            await self.gateway.started.data_plane.handle(name, scope, receive, send)

        return handler

    async def _admin_api(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.gateway.started.admin_api(scope, receive, send)

    async def _admin_ui(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.gateway.started.admin_ui(scope, receive, send)

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
        await send_response(send, 200, render(self.gateway.started.metrics_registry), METRICS_CONTENT_TYPE)

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
