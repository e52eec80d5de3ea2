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
it (its cost is known only afterwards), so the overshoot is bounded by the
requests in flight plus that staleness window; once the recorded spend reaches
the limit, no further request reaches a provider. Errors lean towards
over-counting: spend committed while a reload query runs can be counted twice
until the next reload.

Windows are UTC: daily from 00:00, weekly from Monday 00:00, monthly from the 1st.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway_app.background import Periodic
from gateway_app.clock import now_ms
from gateway_app.http import HTTPError
from gateway_app.storage import Database, Executor

log = logging.getLogger("gateway.budgets")

REFRESH_SECONDS = 2.0
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

    def exceeded_error(self) -> HTTPError:
        return HTTPError(
            429,
            f"service account '{self.account}' has spent {dollars(self.spent_micros)} of its "
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
        # A failed refresh keeps enforcing the last snapshot; readiness reports the database.
        self._refresher = Periodic("budget-refresh", refresh_seconds, self.refresh)

    async def start(self) -> None:
        await self.refresh()
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

    def check(self, service_account_id: int) -> None:
        """Request path: raise 429 budget_exceeded when the account's window is spent. No I/O."""
        budget = self._budgets.get(service_account_id)
        if (
            budget is not None
            and budget.spent_micros >= budget.limit_micros
            and now_ms() < budget.window_end  # a window that just rolled over is not held against it
        ):
            raise budget.exceeded_error()

    def record(self, service_account_id: int | None, created_at: int, cost_micros: int) -> None:
        """Called by the log writer once a ledger row is committed."""
        if service_account_id is None or not cost_micros:
            return
        self._unsnapshotted.append((service_account_id, created_at, cost_micros))
        budget = self._budgets.get(service_account_id)
        if budget is not None and created_at >= budget.window_start:
            budget.spent_micros += cost_micros

    async def refresh(self) -> None:
        # Everything recorded before this point was committed before the query below starts,
        # so the snapshot includes it; what is recorded during the query is re-added afterwards.
        recorded_before = len(self._unsnapshotted)
        at = now_ms()
        rows = await self._db.fetch(
            "SELECT id, name, budget_window, budget_limit_micros FROM service_accounts "
            "WHERE budget_window IS NOT NULL AND budget_limit_micros IS NOT NULL"
        )
        spent = await window_spend(self._db, at)
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
