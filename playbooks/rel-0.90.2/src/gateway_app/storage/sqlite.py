"""SQLite backend: a small pool of aiosqlite connections on one WAL database file."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiosqlite

from gateway_app.storage.base import DatabaseUnavailable, Row

_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=1024)
def _to_sqlite(sql: str) -> str:
    return _PLACEHOLDER.sub(r"?\1", sql)


def sqlite_path(url: str) -> Path:
    """sqlite:///relative/path or sqlite:////absolute/path -> Path."""
    parts = urlsplit(url)
    if parts.netloc:
        raise DatabaseUnavailable(f"SQLite URL {url} must have no host: use sqlite:///PATH")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise DatabaseUnavailable(f"SQLite URL {url} names no file: use sqlite:///PATH")
    return Path(path)


class _Conn:
    """Executor over one connection (used for transactions and pooled calls)."""

    __slots__ = ("raw",)

    def __init__(self, raw: aiosqlite.Connection):
        self.raw = raw

    async def execute(self, sql: str, *args: Any) -> int:
        cursor = await self.raw.execute(_to_sqlite(sql), args)
        count = cursor.rowcount
        await cursor.close()
        return count

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        await self.raw.executemany(_to_sqlite(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return list(await self.raw.execute_fetchall(_to_sqlite(sql), args))

    async def insert_many(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> list[int]:
        if not rows:
            return []
        placeholders = ", ".join(f"?{i}" for i in range(1, len(columns) + 1))
        await self.raw.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows
        )
        # Inside a transaction this connection holds SQLite's only write lock, and
        # AUTOINCREMENT hands out ids in insertion order: the batch owns a contiguous range.
        last = await self.fetchval("SELECT last_insert_rowid()")
        return list(range(last - len(rows) + 1, last + 1))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self.raw.execute(_to_sqlite(sql), args) as cursor:
            return await cursor.fetchone()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


class SQLiteDatabase:
    backend = "sqlite"

    def __init__(self, url: str, conns: list[_Conn]):
        self.url = url
        self._all = conns
        self._idle: asyncio.Queue[_Conn] = asyncio.Queue()
        for conn in conns:
            self._idle.put_nowait(conn)

    @classmethod
    async def open(cls, url: str, pool_max: int = 4, timeout: float = 5.0) -> SQLiteDatabase:
        path = sqlite_path(url)
        if not path.parent.exists():
            raise DatabaseUnavailable(
                f"SQLite directory {path.parent} does not exist: create it or fix database.url"
            )
        conns = []
        try:
            for _ in range(min(pool_max, 4)):  # one writer at a time anyway; a few readers suffice
                raw = await aiosqlite.connect(path, isolation_level=None, timeout=timeout)
                raw.row_factory = sqlite3.Row
                await raw.execute("PRAGMA journal_mode=WAL")
                await raw.execute("PRAGMA synchronous=NORMAL")
                await raw.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                conns.append(_Conn(raw))
        except sqlite3.Error as exc:
            for conn in conns:
                await conn.raw.close()
            raise DatabaseUnavailable(f"cannot open SQLite database {path}: {exc}") from None
        return cls(url, conns)

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[_Conn]:
        conn = await self._idle.get()
        try:
            yield conn
        finally:
            self._idle.put_nowait(conn)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self._conn() as conn:
            return await conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self._conn() as conn:
            return await conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self._conn() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._conn() as conn:
            return await conn.fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self, exclusive: bool = False) -> AsyncIterator[_Conn]:
        # Every transaction takes SQLite's single write lock up front (BEGIN IMMEDIATE):
        # writers then queue on busy_timeout, and a read-then-write transaction cannot
        # fail half-way with "database is locked" when another writer commits first.
        # That already serialises them all, so ``exclusive`` needs nothing more here.
        async with self._conn() as conn:
            await conn.raw.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.raw.execute("ROLLBACK")
                raise
            await conn.raw.execute("COMMIT")

    def pool_stats(self) -> dict[str, int]:
        return {"size": len(self._all), "idle": self._idle.qsize()}

    async def close(self) -> None:
        for conn in self._all:
            await conn.raw.close()
