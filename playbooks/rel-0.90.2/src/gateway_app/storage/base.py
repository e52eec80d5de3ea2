"""The storage interface shared by the SQLite and PostgreSQL backends."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class DatabaseUnavailable(Exception):
    """The database cannot be reached or used; the message names the host and what to do."""


Row = Mapping[str, Any]


class Executor(Protocol):
    """What both a pool and a transaction offer."""

    async def execute(self, sql: str, *args: Any) -> int: ...

    async def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None: ...

    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...

    async def fetchval(self, sql: str, *args: Any) -> Any: ...


class Transaction(Executor, Protocol):
    async def insert_many(
        self, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
    ) -> list[int]:
        """Insert rows into a table with an identity ``id``; their ids, in row order.

        One round trip per batch instead of one per row (the request-log writer's hot loop).
        """
        ...


class Database(Executor, Protocol):
    backend: str  # "sqlite" or "postgres"
    url: str

    def transaction(self, exclusive: bool = False) -> AbstractAsyncContextManager[Transaction]:
        """A transaction. ``exclusive`` serialises it against every other exclusive
        transaction on the same database, across processes (migrations use it)."""
        ...

    def pool_stats(self) -> dict[str, int]: ...

    async def close(self) -> None: ...
