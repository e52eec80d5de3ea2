"""Request-log retention: purge old request logs in bounded batches, never the ledger.

Each batch is its own short transaction over at most ``BATCH_SIZE`` request
logs (children first, then the summaries), so no table stays locked for long
and a purge can be interrupted at any point without leaving orphans behind.
``usage_cost_events`` is never touched: budgets and spend reports read it.

The optional daily schedule (``request_logging.purge``) runs in every replica;
the first replica to insert the (job, UTC day) row into ``maintenance_runs``
runs that day's purge, every other replica sees the row and skips. The row
also records when the run finished and what it deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway_app.clock import now_ms
from gateway_app.config import PurgeSettings, parse_duration
from gateway_app.storage import Database

log = logging.getLogger("gateway.purge")

JOB = "purge_request_logs"
RETENTIONS = ("1d", "3d", "7d")
BATCH_SIZE = 1000
CHILD_TABLES = ("request_log_payloads", "request_log_tags", "request_log_attempts")
_BATCH_LOGS = "SELECT id FROM request_logs WHERE id BETWEEN $1 AND $2 AND created_at < $3"


@dataclass
class PurgeReport:
    retention: str
    cutoff_ms: int
    dry_run: bool
    tables: dict[str, int] = field(default_factory=dict)
    ledger_rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "retention": self.retention,
            "cutoff_ms": self.cutoff_ms,
            "dry_run": self.dry_run,
            "tables": self.tables,
            "ledger_rows": self.ledger_rows,
        }


def cutoff_for(retention: str, at_ms: int) -> int:
    if retention not in RETENTIONS:
        raise ValueError(f"retention '{retention}' is not one of {', '.join(RETENTIONS)}")
    return at_ms - parse_duration(retention) * 1000


async def count_expired(db: Database, cutoff_ms: int) -> dict[str, int]:
    counts = {
        "request_logs": await db.fetchval(
            "SELECT COUNT(*) FROM request_logs WHERE created_at < $1", cutoff_ms
        )
    }
    for table in CHILD_TABLES:
        counts[table] = await db.fetchval(
            f"SELECT COUNT(*) FROM {table} c JOIN request_logs r ON r.id = c.request_log_id "
            "WHERE r.created_at < $1",
            cutoff_ms,
        )
    return {name: int(n) for name, n in counts.items()}


async def _delete_batch(db: Database, cutoff_ms: int, batch_size: int) -> dict[str, int] | None:
    """Deletes the oldest ``batch_size`` expired request logs and their children; None when done."""
    ids = await db.fetch(
        "SELECT id FROM request_logs WHERE created_at < $1 ORDER BY id LIMIT $2", cutoff_ms, batch_size
    )
    if not ids:
        return None
    low, high = ids[0]["id"], ids[-1]["id"]
    deleted: dict[str, int] = {}
    async with db.transaction() as tx:
        for table in CHILD_TABLES:
            deleted[table] = await tx.execute(
                f"DELETE FROM {table} WHERE request_log_id IN ({_BATCH_LOGS})", low, high, cutoff_ms
            )
        deleted["request_logs"] = await tx.execute(
            "DELETE FROM request_logs WHERE id BETWEEN $1 AND $2 AND created_at < $3", low, high, cutoff_ms
        )
    return deleted


async def purge_request_logs(
    db: Database, retention: str, dry_run: bool = False, batch_size: int = BATCH_SIZE
) -> PurgeReport:
    report = PurgeReport(retention, cutoff_for(retention, now_ms()), dry_run)
    if dry_run:
        report.tables = await count_expired(db, report.cutoff_ms)
    else:
        report.tables = {"request_logs": 0, **dict.fromkeys(CHILD_TABLES, 0)}
        while (deleted := await _delete_batch(db, report.cutoff_ms, batch_size)) is not None:
            for table, count in deleted.items():
                report.tables[table] += count
    report.ledger_rows = int(await db.fetchval("SELECT COUNT(*) FROM usage_cost_events"))
    return report


# --- the daily schedule ------------------------------------------------------


def _utc_day(at: datetime) -> str:
    return at.strftime("%Y-%m-%d")


def _start_time(day: datetime, at_utc: str) -> datetime:
    hour, minute = (int(x) for x in at_utc.split(":"))
    return day.replace(hour=hour, minute=minute, second=0, microsecond=0)


async def claim_day(db: Database, utc_day: str, owner: str) -> bool:
    """True for exactly one caller per UTC day, across every replica (the row is the lock)."""
    inserted = await db.execute(
        "INSERT INTO maintenance_runs (job, utc_day, owner, started_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (job, utc_day) DO NOTHING",
        JOB,
        utc_day,
        owner,
        now_ms(),
    )
    return inserted == 1


class PurgeScheduler:
    """Runs the configured purge once per UTC day, in whichever replica claims the day first."""

    def __init__(self, db: Database, settings: PurgeSettings):
        self._db = db
        self._settings = settings
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._settings.enabled:
            self._task = asyncio.create_task(self._loop(), name="purge-scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        # Today's run is due at once if its start time has passed (a replica started late still purges).
        now = datetime.now(UTC)
        due = _start_time(now, self._settings.at_utc)
        while True:
            await asyncio.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
            try:
                await self.run_once(_utc_day(due))
            except Exception as exc:  # the next day tries again; nothing here may stop the gateway
                log.error("scheduled purge failed: %s: %s", exc.__class__.__name__, exc)
            due = _start_time(due + timedelta(days=1), self._settings.at_utc)

    async def run_once(self, utc_day: str) -> PurgeReport | None:
        if not await claim_day(self._db, utc_day, self._owner):
            log.info("scheduled purge skipped", extra={"job": JOB, "utc_day": utc_day, "reason": "claimed"})
            return None
        report = await purge_request_logs(self._db, self._settings.retention)
        await self._db.execute(
            "UPDATE maintenance_runs SET finished_at = $1, details = $2 WHERE job = $3 AND utc_day = $4",
            now_ms(),
            orjson.dumps(report.as_dict()).decode(),
            JOB,
            utc_day,
        )
        log.info("scheduled purge finished", extra={"job": JOB, "utc_day": utc_day, **report.as_dict()})
        return report
