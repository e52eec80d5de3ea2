"""Service accounts and their budgets: the storage operations shared by the CLI and the admin API."""

from __future__ import annotations

import re
from typing import Any

from gateway_app.budgets import MICROS_PER_USD, WINDOWS, usd, window_bounds, window_spend
from gateway_app.clock import now_ms
from gateway_app.errors import Conflict, NotFound
from gateway_app.storage import Database, Executor, Row

ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")  # the same rule as config's service_accounts[].name


def parse_budget(budget: Any) -> tuple[str, int] | None:
    """{"window", "limit_usd"} (or None) -> (window, limit in micro-USD); ValueError naming the field."""
    if budget is None:
        return None
    if not isinstance(budget, dict) or set(budget) - {"window", "limit_usd"}:
        raise ValueError('budget must be {"window": "daily"|"weekly"|"monthly", "limit_usd": number} or null')
    window, limit = budget.get("window"), budget.get("limit_usd")
    if window not in WINDOWS:
        raise ValueError(f"budget.window must be one of {', '.join(WINDOWS)}")
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0:
        raise ValueError("budget.limit_usd must be a number >= 0")
    return window, round(limit * MICROS_PER_USD)


def _account(row: Row, spent: dict[int, int], at_ms: int) -> dict[str, Any]:
    budget = None
    if row["budget_window"] is not None and row["budget_limit_micros"] is not None:
        start, _ = window_bounds(row["budget_window"], at_ms)
        budget = {
            "window": row["budget_window"],
            "limit_usd": usd(row["budget_limit_micros"]),
            "spent_usd": usd(spent.get(row["id"], 0)),
            "window_start": start,
        }
    return {
        "id": row["id"],
        "name": row["name"],
        "disabled": bool(row["disabled"]),
        "source": row["source"],
        "budget": budget,
    }


async def list_service_accounts(db: Executor, name: str | None = None) -> list[dict[str, Any]]:
    """Every account (or the one named) with its budget and the current window's spend from the ledger."""
    at = now_ms()
    where, args = ("WHERE name = $1", [name]) if name is not None else ("", [])
    rows = await db.fetch(f"SELECT * FROM service_accounts {where} ORDER BY name", *args)
    spent = await window_spend(db, at)
    return [_account(row, spent, at) for row in rows]


async def get_service_account(db: Executor, name: str) -> dict[str, Any]:
    found = await list_service_accounts(db, name)
    if not found:
        raise NotFound(f"no service account '{name}'")
    return found[0]


async def create_service_account(
    db: Database, name: str, budget: tuple[str, int] | None = None, source: str = "api"
) -> dict[str, Any]:
    if not isinstance(name, str) or not ACCOUNT_NAME.match(name):
        raise ValueError("name must match ^[a-z0-9][a-z0-9_.-]*$ (lowercase letters, digits, '_', '.', '-')")
    window, limit = budget if budget is not None else (None, None)
    ts = now_ms()
    created = await db.execute(
        "INSERT INTO service_accounts "
        "(name, budget_window, budget_limit_micros, source, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO NOTHING",
        name,
        window,
        limit,
        source,
        ts,
    )
    if not created:
        raise Conflict(f"service account '{name}' already exists")
    return await get_service_account(db, name)


async def set_disabled(db: Database, name: str, disabled: bool) -> dict[str, Any]:
    """Disabling stops every key of the account on every replica within auth.key_cache_refresh_seconds."""
    changed = await db.execute(
        "UPDATE service_accounts SET disabled = $1, updated_at = $2 WHERE name = $3", disabled, now_ms(), name
    )
    if not changed:
        raise NotFound(f"no service account '{name}'")
    return await get_service_account(db, name)


async def set_budget(db: Database, name: str, budget: tuple[str, int] | None) -> dict[str, Any]:
    window, limit = budget if budget is not None else (None, None)
    changed = await db.execute(
        "UPDATE service_accounts SET budget_window = $1, budget_limit_micros = $2, updated_at = $3 "
        "WHERE name = $4",
        window,
        limit,
        now_ms(),
        name,
    )
    if not changed:
        raise NotFound(f"no service account '{name}'")
    return await get_service_account(db, name)
