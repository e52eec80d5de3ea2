"""`gateway serve`: pre-flight checks, then uvicorn with a graceful drain on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal

import uvicorn

from gateway_app import __version__, migrations
from gateway_app.admin.users import bootstrap_admin
from gateway_app.app import GatewayApp
from gateway_app.client_protocol import protocol_factory
from gateway_app.config import GatewaySettings
from gateway_app.storage import connect

log = logging.getLogger("gateway.server")


class StartupRefused(Exception):
    """serve will not start; the message says what to run."""


async def preflight(settings: GatewaySettings, config_path: str) -> None:
    """Bring the database to this release's schema (migrations: auto) or refuse to start (check)."""
    db = await connect(settings.database.url.value, 1, 1, settings.database.connect_timeout_seconds)
    try:
        if settings.database.migrations == "auto":
            applied = await migrations.apply(db)
            if applied:
                log.info("applied migrations", extra={"versions": [m.version for m in applied]})
        else:
            status = await migrations.check(db)
            if not status.is_current:
                raise StartupRefused(
                    f"database schema is at version {status.current_version} but this release needs "
                    f"{status.latest_known}, and database.migrations is 'check'. "
                    f"Run: gateway migrate --apply --config {config_path}"
                )
        if settings.auth.bootstrap_admin.run_on_start:
            outcome = await bootstrap_admin(db, settings)
            log.info("bootstrap admin", extra={"outcome": outcome})
    finally:
        await db.close()


def raise_open_files_limit(settings: GatewaySettings) -> None:
    """Lift the soft descriptor limit so that max_connections clients and their upstreams fit."""
    needed = settings.server.max_connections + sum(p.max_connections for p in settings.providers) + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning(
                "open-files limit below what the connection caps need",
                extra={"limit": target, "needed": needed},
            )


def serve(settings: GatewaySettings, config_path: str) -> int:
    asyncio.run(preflight(settings, config_path))
    raise_open_files_limit(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            GatewayApp(settings),
            host=settings.server.host,
            port=settings.server.port,
            loop="uvloop",
            http=protocol_factory(settings.server),
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=int(settings.server.shutdown_grace_seconds),
            timeout_keep_alive=settings.server.keep_alive_timeout_seconds,  # type: ignore[arg-type]
            # Without trusted proxies, skip the per-request X-Forwarded-For middleware.
            proxy_headers=bool(settings.server.trusted_proxies),
            forwarded_allow_ips=settings.server.trusted_proxies,
        )
    )
    log.info(
        "gateway starting",
        extra={"version": __version__, "host": settings.server.host, "port": settings.server.port},
    )
    # uvicorn drains on SIGTERM, restores the previous handler and re-raises the
    # signal. A drained stop is a clean stop, so the handler it restores is a no-op
    # and the process exits 0 (what Kubernetes and supervisors expect).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    server.run()
    # uvicorn returns without raising when lifespan startup fails.
    return 0 if server.started else 3
