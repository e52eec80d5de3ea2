"""Readiness of a started gateway: /readyz, the admin UI's overview and the database_reachable metric."""

from __future__ import annotations

from typing import Any

from gateway_app import __version__, migrations
from gateway_app.request_log import RequestLogWriter
from gateway_app.storage import Database, OneAtATime
from gateway_app.telemetry import Telemetry

_READY_TIMEOUT_SECONDS = 2.0


def not_started() -> tuple[str, dict[str, Any]]:
    """The answer before start() has connected the database."""
    return "not_ready", {"version": __version__, "database": "not connected"}


class Readiness:
    def __init__(self, db: Database, writer: RequestLogWriter, telemetry: Telemetry):
        self._db = db
        self._writer = writer
        self._telemetry = telemetry
        self.database_reachable = True  # as the last check found it (a metric)
        self._checks = OneAtATime("readiness check")

    async def check(self) -> tuple[str, dict[str, Any]]:
        """("ready" | "degraded" | "not_ready", details). Degraded still serves (HTTP 200).

        The database is the log store and the control plane's source, not the data plane:
        while it is unreachable (down, hung, full) replicas serve from memory (keys, routes,
        budgets as last loaded) and spool ledger rows, so they stay in the load balancer.
        A database this release cannot run on (schema, missing database) is not ready.
        """
        details: dict[str, Any] = {"version": __version__}
        otel = self._telemetry.readiness()
        if otel is not None:
            details["otel"] = otel  # a warning only: a missing collector never makes a replica unready
        if self._writer.spool.pending:
            details["ledger_spool"] = f"{self._writer.spool.rows} ledger rows waiting for the database"
        try:
            status = await self._checks.run(migrations.check(self._db), _READY_TIMEOUT_SECONDS)
        except migrations.MigrationError as exc:
            return "not_ready", {**details, "database": "ok", "schema": str(exc)}
        except self._db.outage_errors as exc:
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
        if self._writer.degraded:
            details["database"] = "answers reads, but ledger writes fail (disk full?): ledger spooled"
            return "degraded", details
        return "ready", details
