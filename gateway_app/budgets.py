"""Service-account budgets: spend per UTC window from the ledger, checked without the database.

Each replica keeps, per service account with a budget, the window's spend as
summed from ``usage_cost_events`` and reloads it every ``REFRESH_SECONDS``. On
top of that snapshot it adds the spend its own log writer has committed since
the snapshot was taken, so a replica sees its own traffic as soon as the
writer flushes. The request path does one dict lookup and one comparison.

Staleness (stated in docs/control-plane.md): spend recorded by *another*
replica is seen here within ``request_logging.flush_interval_seconds`` (its
writer) + ``REFRESH_SECONDS`` (our reload) + one query, i.e. about 2.5 s with
the defaults; this replica's own spend within one flush interval. Budget
changes made through the admin API or seed-config apply within
``REFRESH_SECONDS``. A request admitted while under the limit may finish over
it (its cost is known only afterwards). Admission therefore reserves an
estimate of each request's cost (prompt bytes / 4 plus ``max_tokens``, or
``DEFAULT_COMPLETION_TOKENS``, at the first route's price) and the reservation
counts as spent until the writer settles it with the real cost: concurrent
requests on one replica cannot overshoot by their number, only by how much the
last admitted request exceeds its estimate (plus the cross-replica staleness
window). Once spend plus reservations reach the limit, no further request
reaches a provider. A reload and this replica's writer never overlap
(``settling``): a commit's spend is either in the reloaded snapshot or recorded
on top of it, never both and never neither.

Windows are UTC: daily from 00:00, weekly from Monday 00:00, monthly from the 1st.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway_app.background import Periodic
from gateway_app.clock import now_ms
from gateway_app.http import HTTPError
from gateway_app.pricing import Price, cost_micros
from gateway_app.storage import Database, Executor, OneAtATime

log = logging.getLogger("gateway.budgets")

REFRESH_SECONDS = 2.0
# The writer waits on a running reload (``settling``): a slow database delays its commits this long at most.
REFRESH_DEADLINE_SECONDS = 5.0
WINDOWS = ("daily", "weekly", "monthly")
MICROS_PER_USD = 1_000_000


def window_bounds(window: str, at_ms: int) -> tuple[int, int]:
    """[start, end) of the UTC budget window containing ``at_ms``, epoch ms."""
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "daily":
        start, end = day, day + timedelta(days=1)
    elif window == "weekly":
        start = day - timedelta(days=day.weekday())  # Monday
        end = start + timedelta(days=7)
    elif window == "monthly":
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown budget window '{window}'; use one of {', '.join(WINDOWS)}")
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def iso_ms(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usd(micros: int) -> float:
    return micros / MICROS_PER_USD


def dollars(micros: int) -> str:
    """'$5.00', or every digit for amounts that are not whole cents ('$0.000002')."""
    return f"${usd(micros):.2f}" if micros % 10_000 == 0 else f"${usd(micros):.6f}"


async def window_spend(db: Executor, at_ms: int) -> dict[int, int]:
    """Micro-USD spent in the current window by every service account that has a budget."""
    spent: dict[int, int] = {}
    for window in WINDOWS:
        start, _ = window_bounds(window, at_ms)
        rows = await db.fetch(
            "SELECT e.service_account_id AS account_id, SUM(e.cost_micros) AS spent "
            "FROM usage_cost_events e JOIN service_accounts s ON s.id = e.service_account_id "
            "WHERE s.budget_window = $1 AND e.created_at >= $2 GROUP BY e.service_account_id",
            window,
            start,
        )
        spent.update({r["account_id"]: int(r["spent"] or 0) for r in rows})
    return spent


@dataclass(slots=True)
class Budget:
    account: str
    window: str
    limit_micros: int
    window_start: int
    window_end: int
    spent_micros: int  # ledger snapshot + this replica's spend since the snapshot

    def exceeded_error(self, reserved_micros: int = 0) -> HTTPError:
        in_flight = f" (+{dollars(reserved_micros)} reserved in flight)" if reserved_micros else ""
        return HTTPError(
            429,
            f"service account '{self.account}' has spent {dollars(self.spent_micros)}{in_flight} of its "
            f"{self.window} budget of {dollars(self.limit_micros)} (window {iso_ms(self.window_start)} to "
            f"{iso_ms(self.window_end)}); requests resume when the window resets or an admin raises "
            "the budget",
            "budget_exceeded",
            "insufficient_quota",
        )


class BudgetTracker:
    def __init__(self, db: Database, refresh_seconds: float = REFRESH_SECONDS):
        self._db = db
        self._budgets: dict[int, Budget] = {}
        # Spend committed by this replica's writer, not yet in a ledger snapshot: (account, created_at, µ$).
        self._unsnapshotted: list[tuple[int, int, int]] = []
        # Estimates of admitted requests whose ledger rows are not settled yet, per account.
        self._reserved: dict[int, int] = {}
        # Held by a reload's queries and by the writer from a commit until its spend is recorded.
        self._snapshot_lock = asyncio.Lock()
        self._reloads = OneAtATime("budget reload")
        # A failed refresh keeps enforcing the last snapshot; readiness reports the database.
        self._refresher = Periodic("budget-refresh", refresh_seconds, self.refresh)

    async def start(self) -> None:
        await self.refresh()
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

    def admit(self, service_account_id: int, estimate_micros: int) -> int:
        """Request path: refuse (429) a spent window, else reserve ``estimate_micros``. No I/O.

        Reservations count as spent until the request's ledger row settles them, so N
        concurrent requests see each other's estimates: the overshoot is one request's
        cost beyond its estimate, not N requests'. Returns the amount reserved.
        """
        budget = self._budgets.get(service_account_id)
        if budget is None:
            return 0
        reserved = self._reserved.get(service_account_id, 0)
        if budget.spent_micros + reserved >= budget.limit_micros and now_ms() < budget.window_end:
            # a window that just rolled over is not held against it
            raise budget.exceeded_error(reserved)
        self._reserved[service_account_id] = reserved + estimate_micros
        return estimate_micros

    def spent_micros(self, service_account_id: int) -> int | None:
        """The window's spend as this replica counts it; None without a budget."""
        budget = self._budgets.get(service_account_id)
        return None if budget is None else budget.spent_micros

    async def _snapshot(self, at: int) -> tuple[list[Any], dict[int, int]]:
        rows = await self._db.fetch(
            "SELECT id, name, budget_window, budget_limit_micros FROM service_accounts "
            "WHERE budget_window IS NOT NULL AND budget_limit_micros IS NOT NULL"
        )
        return rows, await window_spend(self._db, at)

    def record(
        self, service_account_id: int | None, created_at: int, cost_micros: int, reserved_micros: int = 0
    ) -> None:
        """Called by the log writer once per request: its ledger row committed or spooled."""
        if service_account_id is None:
            return
        if reserved_micros:
            left = self._reserved.get(service_account_id, 0) - reserved_micros
            if left > 0:
                self._reserved[service_account_id] = left
            else:
                self._reserved.pop(service_account_id, None)
        if not cost_micros:
            return
        self._unsnapshotted.append((service_account_id, created_at, cost_micros))
        budget = self._budgets.get(service_account_id)
        if budget is not None and created_at >= budget.window_start:
            budget.spent_micros += cost_micros

    @contextlib.asynccontextmanager
    async def settling(self) -> AsyncIterator[None]:
        """Held by the log writer from a ledger commit until it has called ``record``.

        Without it a reload could read a committed row whose spend is recorded only
        afterwards, and count that spend twice until the next reload.
        """
        async with self._snapshot_lock:
            yield

    async def refresh(self) -> None:
        async with self._snapshot_lock:
            # Every commit so far is recorded and none runs until the queries end: the
            # snapshot holds exactly the spend recorded before this point.
            recorded_before = len(self._unsnapshotted)
            at = now_ms()
            rows, spent = await self._reloads.run(self._snapshot(at), REFRESH_DEADLINE_SECONDS)
        budgets: dict[int, Budget] = {}
        for row in rows:
            start, end = window_bounds(row["budget_window"], at)
            budgets[row["id"]] = Budget(
                row["name"],
                row["budget_window"],
                row["budget_limit_micros"],
                start,
                end,
                spent.get(row["id"], 0),
            )
        later = self._unsnapshotted[recorded_before:]
        for account_id, created_at, cost in later:
            budget = budgets.get(account_id)
            if budget is not None and created_at >= budget.window_start:
                budget.spent_micros += cost
        self._unsnapshotted = later
        self._budgets = budgets


DEFAULT_COMPLETION_TOKENS = 256  # the estimate when a request sets no max_tokens
_BYTES_PER_TOKEN = 4


def estimate_micros(price: Price | None, request_bytes: int, payload: dict[str, Any]) -> int:
    """What admission reserves: the request's bytes as prompt tokens, its token cap as completion."""
    if price is None:
        return 0
    cap = payload.get("max_completion_tokens", payload.get("max_tokens"))
    completion = cap if isinstance(cap, int) and cap > 0 else DEFAULT_COMPLETION_TOKENS
    cost, _ = cost_micros(price, -(-request_bytes // _BYTES_PER_TOKEN), completion)
    return cost
