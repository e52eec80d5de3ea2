"""Expired login-throttle rows are deleted: in bounded rounds, and by every running gateway on its own."""

from __future__ import annotations

from gateway_app import migrations
from gateway_app.admin.sessions import THROTTLE_WINDOW_MS, delete_expired_throttle_rows
from gateway_app.clock import now_ms
from gateway_app.storage import connect
from tests.conftest import base_config
from tests.support import sql
from tests.support.admin import login
from tests.support.processes import wait_until

_PLANT = "INSERT INTO auth_throttle (scope, subject, window_start, failures) VALUES ($1, $2, $3, $4)"


def _plant(expired: int, live: int) -> list[tuple]:
    at = now_ms()
    old = [("address", f"10.8.0.{i}", at - THROTTLE_WINDOW_MS - 1000, 3) for i in range(expired)]
    new = [("address", f"10.9.0.{i}", at - 1000, 2) for i in range(live)]
    return old + new


async def test_expired_rows_go_in_bounded_rounds_and_live_windows_stay(db_url) -> None:
    db = await connect(db_url)
    try:
        await migrations.apply(db)
        await db.executemany(_PLANT, _plant(expired=5, live=2))
        assert await delete_expired_throttle_rows(db, batch=3) == 3
        assert await delete_expired_throttle_rows(db, batch=3) == 2
        assert await delete_expired_throttle_rows(db, batch=3) == 0
        left = await db.fetch("SELECT subject, failures FROM auth_throttle ORDER BY subject")
        assert [(r["subject"], r["failures"]) for r in left] == [("10.9.0.0", 2), ("10.9.0.1", 2)]
    finally:
        await db.close()


def test_a_running_gateway_deletes_expired_rows(db_url, launcher) -> None:
    config = base_config(db_url)
    config["auth"]["throttle_cleanup_seconds"] = 0.5
    gateway = launcher.gateway(config)
    sql.execute_many(db_url, [(_PLANT, _plant(expired=3, live=0))])
    assert login(gateway.url, password="wrong-password-here").status_code == 401  # a live window
    wait_until(
        lambda: sql.scalar(db_url, "SELECT COUNT(*) FROM auth_throttle WHERE subject LIKE '10.8.%'") == 0, 30
    )
    live = sql.fetch(db_url, "SELECT scope, failures FROM auth_throttle ORDER BY scope")
    assert [(r["scope"], r["failures"]) for r in live] == [("account", 1), ("address", 1)]
