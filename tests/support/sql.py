"""Direct database access for tests that must look at (or plant) rows behind the gateway's back."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway_app.storage import connect


def fetch(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        db = await connect(url, 1, 1)
        try:
            return [dict(row) for row in await db.fetch(sql, *args)]
        finally:
            await db.close()

    return asyncio.run(run())


def scalar(url: str, sql: str, *args: Any) -> Any:
    rows = fetch(url, sql, *args)
    return next(iter(rows[0].values())) if rows else None


def count(url: str, table: str) -> int:
    return int(scalar(url, f"SELECT COUNT(*) FROM {table}"))


def execute_many(url: str, batches: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    """Runs each statement over its rows, all in one transaction."""

    async def run() -> None:
        db = await connect(url, 1, 1)
        try:
            async with db.transaction() as tx:
                for sql, rows in batches:
                    await tx.executemany(sql, rows)
        finally:
            await db.close()

    asyncio.run(run())
