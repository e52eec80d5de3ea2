"""The storage interface behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from gateway_app import migrations
from gateway_app.storage import DatabaseUnavailable, connect, describe_url


@pytest.fixture
async def db(db_url):
    database = await connect(db_url)
    await migrations.apply(database)
    yield database
    await database.close()


async def test_insert_many_returns_each_rows_id_in_order(db) -> None:
    columns = ("name", "source", "created_at", "updated_at")
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO service_accounts (name, created_at, updated_at) VALUES ('first', 1, 1)")
        ids = await tx.insert_many("service_accounts", columns, [(f"sa-{i}", "test", i, i) for i in range(5)])
        assert await tx.insert_many("service_accounts", columns, []) == []
    assert len(set(ids)) == 5
    for i, row_id in enumerate(ids):
        assert await db.fetchval("SELECT name FROM service_accounts WHERE id = $1", row_id) == f"sa-{i}"
    # Rows inserted later still get fresh ids (the identity sequence moved past the batch).
    later = await db.fetchval(
        "INSERT INTO service_accounts (name, created_at, updated_at) VALUES ('later', 1, 1) RETURNING id"
    )
    assert later > max(ids)


async def test_concurrent_batches_get_disjoint_ids(db) -> None:
    columns = ("name", "source", "created_at", "updated_at")

    async def batch(prefix: str) -> list[int]:
        async with db.transaction() as tx:
            return await tx.insert_many(
                "service_accounts", columns, [(f"{prefix}{i}", "t", 0, 0) for i in range(50)]
            )

    first, second = await asyncio.gather(batch("a"), batch("b"))
    assert not set(first) & set(second)
    names = {r["id"]: r["name"] for r in await db.fetch("SELECT id, name FROM service_accounts")}
    assert [names[i] for i in first] == [f"a{i}" for i in range(50)]
    assert [names[i] for i in second] == [f"b{i}" for i in range(50)]


async def test_failed_transaction_leaves_nothing(db) -> None:
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO service_accounts (name, created_at, updated_at) VALUES ('x', 1, 1)")
            raise RuntimeError("boom")
    assert await db.fetchval("SELECT count(*) FROM service_accounts") == 0


async def test_unreachable_and_malformed_urls_say_what_to_fix(tmp_path) -> None:
    with pytest.raises(DatabaseUnavailable, match=r"127\.0\.0\.1:1/x"):
        await connect("postgresql://u:pw@127.0.0.1:1/x", timeout=2)
    with pytest.raises(DatabaseUnavailable, match="does not exist"):
        await connect(f"sqlite:///{tmp_path}/missing-dir/gw.db")
    with pytest.raises(DatabaseUnavailable, match="unsupported database URL scheme 'mysql'"):
        await connect("mysql://root@localhost/x")
    assert describe_url("postgresql://u:hunter2@h:5432/db") == "postgresql://u:***@h:5432/db"
