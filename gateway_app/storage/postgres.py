"""PostgreSQL backend on an asyncpg pool."""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from gateway_app.storage.base import DatabaseUnavailable, Row

# Key of the transaction-scoped advisory lock that serialises exclusive transactions.
_EXCLUSIVE_LOCK_KEY = zlib.crc32(b"gateway_app.exclusive")


# "INSERT INTO t (cols) VALUES ($1, ..., $n) [tail]": batched as one INSERT ... SELECT FROM unnest.
_INSERT_VALUES = re.compile(
    r"^(INSERT\s+INTO\s+\w+\s*\([^)]*\)(?:\s+OVERRIDING SYSTEM VALUE)?)\s+VALUES\s*\(([$\d,\s]+)\)(.*)$",
    re.DOTALL,
)


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
        match = _INSERT_VALUES.match(sql)
        if match is None or len(rows) < 2:
            await self.conn.executemany(sql, rows)
            return
        # One statement with one array per column: asyncpg's executemany binds and runs each
        # row separately, which leaves the ledger writer behind a busy gateway.
        types = [t.name for t in (await self.conn.prepare(sql)).get_parameters()]
        head, _, tail = match.groups()
        arrays = ", ".join(f"${i}::{name}[]" for i, name in enumerate(types, start=1))
        await self.conn.execute(
            f"{head} SELECT * FROM unnest({arrays}){tail}", *map(list, zip(*rows, strict=True))
        )

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
        await self.executemany(
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
    outage_errors = (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory, too many connections
        asyncpg.exceptions.OperatorInterventionError,  # shutting down, cannot connect now
    )

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

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection that a cut-short call (deadline, cancel, outage) terminates.

        Returning such a connection to the pool resets it, which waits on the server:
        forever if the server is hung (SIGSTOP), so the caller's deadline would not hold.
        Terminating cannot wait, and the server rolls back whatever was open.
        """
        conn = await self._pool.acquire()
        try:
            yield conn
        except (asyncio.CancelledError, *self.outage_errors):
            conn.terminate()
            raise
        finally:
            await self._pool.release(conn)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._connection() as conn:
            return _rowcount(await conn.execute(sql, *args))

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._connection() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._connection() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._connection() as conn:
            return await conn.fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self, exclusive: bool = False) -> AsyncIterator[_Tx]:
        async with self._connection() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                if exclusive:
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _EXCLUSIVE_LOCK_KEY)
                yield _Tx(conn)
            except (asyncio.CancelledError, *self.outage_errors):
                raise  # the connection is terminated: nothing to roll back on this side
            except BaseException:
                await tx.rollback()
                raise
            await tx.commit()

    def pool_stats(self) -> dict[str, int]:
        return {"size": self._pool.get_size(), "idle": self._pool.get_idle_size()}

    async def close(self) -> None:
        await self._pool.close()
