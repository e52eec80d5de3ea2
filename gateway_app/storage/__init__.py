"""One async storage interface over SQLite and PostgreSQL.

SQL is written once, PostgreSQL style (``$1`` placeholders); the SQLite backend
rewrites placeholders to its numbered ``?1`` form. Everything else that differs
between the two (DDL, locking) lives in the migrations and in each backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

from gateway_app.storage.base import Database, DatabaseUnavailable, Executor, Row, Transaction

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "Executor",
    "Row",
    "Transaction",
    "bounded",
    "connect",
    "describe_url",
]

T = TypeVar("T")


async def bounded(call: Coroutine[Any, Any, T], seconds: float) -> T:
    """``call``'s result within ``seconds``, else TimeoutError -- without waiting for its cleanup.

    ``asyncio.timeout`` cancels a call and then waits for it to unwind; on a hung database
    (SIGSTOP) that unwinding (rollback, connection reset) waits forever too. Here the call
    runs as a task that is cancelled and left behind; callers that retry keep the returned
    task in ``TimeoutError.args[0]`` and do not start another call while it is still stuck.
    """
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never "exception not retrieved"
    raise TimeoutError(task)


class OneAtATime:
    """``bounded`` calls that never pile up on a hung database.

    A call abandoned at its deadline may stay stuck (SIGSTOPped server); until it lets go,
    the next call fails at once with TimeoutError instead of taking another connection
    and hanging beside it.
    """

    def __init__(self, what: str):
        self._what = what
        self._stuck: asyncio.Task[Any] | None = None

    async def run(self, call: Coroutine[Any, Any, T], seconds: float) -> T:
        if self._stuck is not None and not self._stuck.done():
            call.close()
            raise TimeoutError(f"the previous {self._what} is still waiting on the database")
        try:
            return await bounded(call, seconds)
        except TimeoutError as exc:
            if exc.args and isinstance(exc.args[0], asyncio.Task):
                self._stuck = exc.args[0]
            raise


def describe_url(url: str) -> str:
    """The URL without its password: safe for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


async def connect(url: str, pool_min: int = 1, pool_max: int = 10, timeout: float = 5.0) -> Database:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from gateway_app.storage.sqlite import SQLiteDatabase

        return await SQLiteDatabase.open(url, pool_max=pool_max, timeout=timeout)
    if scheme in ("postgres", "postgresql"):
        from gateway_app.storage.postgres import PostgresDatabase

        return await PostgresDatabase.open(url, pool_min=pool_min, pool_max=pool_max, timeout=timeout)
    raise DatabaseUnavailable(
        f"unsupported database URL scheme '{scheme}' in {describe_url(url)}: "
        "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    )
