"""PostgreSQL backend on an asyncpg pool."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from gateway_app.storage.base import DatabaseUnavailable, Row

# Key of the transaction-scoped advisory lock that serialises exclusive transactions.
_EXCLUSIVE_LOCK_KEY = zlib.crc32(b"gateway_app.exclusive")


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "DELETE 12" or "INSERT 0 1".
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _Tx:
    __slots__ = ("conn",)

    def __init__(self, conn: asyncpg.Connection):
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self.conn.execute(sql, *args))

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self.conn.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self.conn.fetch(sql, *args)

    async def insert_many(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> list[int]:
        if not rows:
            return []
        # Ids are drawn from the identity's sequence first, so each row's id is known
        # without relying on the order of RETURNING.
        ids = [
            r[0]
            for r in await self.conn.fetch(
                "SELECT nextval(pg_get_serial_sequence($1, 'id')) FROM generate_series(1, $2)",
                table,
                len(rows),
            )
        ]
        placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 2))
        await self.conn.executemany(
            f"INSERT INTO {table} (id, {', '.join(columns)}) OVERRIDING SYSTEM VALUE VALUES ({placeholders})",
            [(row_id, *row) for row_id, row in zip(ids, rows, strict=True)],
        )
        return ids

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)


class PostgresDatabase:
    backend = "postgres"

    def __init__(self, url: str, pool: asyncpg.Pool):
        self.url = url
        self._pool = pool

    @classmethod
    async def open(
        cls, url: str, pool_min: int = 1, pool_max: int = 10, timeout: float = 5.0
    ) -> PostgresDatabase:
        parts = urlsplit(url)
        where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}/{parts.path.lstrip('/')}"
        try:
            pool = await asyncpg.create_pool(
                url, min_size=pool_min, max_size=pool_max, timeout=timeout, command_timeout=60
            )
        except (TimeoutError, OSError) as exc:
            raise DatabaseUnavailable(
                f"cannot reach PostgreSQL at {where} ({exc.__class__.__name__}: {exc}); "
                "check that the server is up and database.url points at it"
            ) from None
        except asyncpg.PostgresError as exc:
            raise DatabaseUnavailable(f"PostgreSQL at {where} refused the connection: {exc}") from None
        return cls(url, pool)

    async def execute(self, sql: str, *args: Any) -> int:
        return _rowcount(await self._pool.execute(sql, *args))

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self._pool.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._pool.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._pool.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._pool.fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self, exclusive: bool = False) -> AsyncIterator[_Tx]:
        async with self._pool.acquire() as conn, conn.transaction():
            if exclusive:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _EXCLUSIVE_LOCK_KEY)
            yield _Tx(conn)

    def pool_stats(self) -> dict[str, int]:
        return {"size": self._pool.get_size(), "idle": self._pool.get_idle_size()}

    async def close(self) -> None:
        await self._pool.close()
