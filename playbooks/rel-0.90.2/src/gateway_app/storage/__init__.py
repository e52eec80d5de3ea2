"""One async storage interface over SQLite and PostgreSQL.

SQL is written once, PostgreSQL style (``$1`` placeholders); the SQLite backend
rewrites placeholders to its numbered ``?1`` form. Everything else that differs
between the two (DDL, locking) lives in the migrations and in each backend.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway_app.storage.base import Database, DatabaseUnavailable, Executor, Row, Transaction

__all__ = ["Database", "DatabaseUnavailable", "Executor", "Row", "Transaction", "connect", "describe_url"]


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
