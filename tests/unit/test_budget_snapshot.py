"""A budget reload never reads between a ledger commit and the spend the writer records for it.

The race it closes (CI saw it once under load): the writer commits a row, a reload's query
sees it, then the writer records the same spend on top of the new snapshot -- counted twice,
and a key refused while its account is under budget.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import SEED_KEY
from tests.unit.conftest import StartGateway, auth, sqlite_config

CHAT = {"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]}


async def test_a_reload_waits_for_the_writer_and_counts_each_commit_once(
    start_gateway: StartGateway, tmp_path: Path
) -> None:
    config = sqlite_config(tmp_path)
    config["service_accounts"][0]["budget"] = {"window": "daily", "limit_usd": 1.0}
    gateway = await start_gateway(config)
    budgets = gateway.app.gateway.started.budgets
    await budgets.refresh()  # the seeded budget, without waiting for the periodic reload

    db = gateway.app.gateway.started.db
    writer = gateway.app.gateway.started.writer
    async with budgets.settling():
        for _ in range(5):
            response = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=auth(SEED_KEY))
            assert response.status_code == 200, response.text
        commit = asyncio.create_task(writer.flush())
        reload = asyncio.create_task(budgets.refresh())
        await asyncio.sleep(0.3)
        assert not commit.done(), "the writer committed while a reload could read"
        assert not reload.done(), "a reload ran while the writer could commit"
        assert await db.fetchval("SELECT COUNT(*) FROM usage_cost_events") == 0
    await asyncio.wait_for(asyncio.gather(commit, reload), timeout=10)
    while await writer.flush():
        pass

    account = await db.fetchval("SELECT id FROM service_accounts WHERE budget_window = 'daily'")
    ledger_spend = await db.fetchval("SELECT COALESCE(SUM(cost_micros), 0) FROM usage_cost_events")
    assert ledger_spend > 0
    assert budgets.spent_micros(account) == ledger_spend
    await budgets.refresh()
    assert budgets.spent_micros(account) == ledger_spend
