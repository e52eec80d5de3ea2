"""In-process fixtures: the ASGI app itself on a SQLite file, driven through httpx.ASGITransport.

No gateway subprocess, no listening gateway port, no PostgreSQL: these tests are `make check`'s
loop (tests/README.md). A fake OpenAI-compatible upstream, where a test needs one, is the same
aiohttp app the process tests use (tests/support/fake_upstream.py), served on this event loop.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from gateway_app.app import GatewayApp
from gateway_app.config import parse_settings
from gateway_app.seed import seed_config
from gateway_app.server import preflight
from gateway_app.storage import connect
from tests.conftest import ADMIN_PASSWORD, BASE_ENV, SEED_KEY, base_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.processes import free_port

ADMIN_EMAIL = "admin@example.com"


class InProcessGateway:
    """A started GatewayApp (migrated, seeded, bootstrap admin) and an httpx client on it."""

    def __init__(self, app: GatewayApp, client: httpx.AsyncClient, db_url: str):
        self.app = app
        self.client = client
        self.db_url = db_url

    async def admin_headers(self) -> dict[str, str]:
        login = await self.client.post(
            "/admin/api/session", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
        )
        assert login.status_code == 200, login.text
        return {"Authorization": f"Bearer {login.json()['token']}"}


def auth(key: str = SEED_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sqlite_config(tmp_path: Path) -> dict[str, Any]:
    """tests.conftest.base_config on a SQLite file of this test: the process tests' config."""
    return base_config(f"sqlite:///{tmp_path / 'gateway.db'}")


StartGateway = Callable[[dict[str, Any]], Awaitable[InProcessGateway]]


async def _prepare(config: dict[str, Any]) -> None:
    """What `gateway serve` runs before serving (migrations, bootstrap admin), then `seed-config`."""
    settings = parse_settings(config, environ=BASE_ENV)
    await preflight(settings, "<in-process>")
    db = await connect(settings.database.url.value)
    try:
        await seed_config(db, settings)
    finally:
        await db.close()


def _copy_template(template: Path, config: dict[str, Any]) -> None:
    url = config["database"]["url"].removeprefix("literal.")
    database_file = Path(url.removeprefix("sqlite:///"))
    if url.startswith("sqlite:///") and not database_file.exists():
        shutil.copy(template, database_file)


@pytest.fixture(scope="session")
def prepared_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file prepared once per session with the base config: migrated, admin, seeded key.

    Copied under each test's database (argon2 hashing and migrations cost ~1 s a test otherwise);
    every start still runs the preparation, which then finds its work done.
    """
    template = tmp_path_factory.mktemp("template") / "gateway.db"
    asyncio.run(_prepare(sqlite_config(template.parent)))
    return template


@pytest.fixture
async def start_gateway(prepared_sqlite: Path) -> AsyncIterator[StartGateway]:
    """start_gateway(config) prepares the database as `gateway serve` would, then starts the app."""
    async with AsyncExitStack() as stack:

        async def start(config: dict[str, Any]) -> InProcessGateway:
            _copy_template(prepared_sqlite, config)
            await _prepare(config)
            settings = parse_settings(config, environ=BASE_ENV)
            app = GatewayApp(settings)
            await app.gateway.start()
            stack.push_async_callback(app.gateway.stop)
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway.test", timeout=10
            )
            stack.push_async_callback(client.aclose)
            return InProcessGateway(app, client, settings.database.url.value)

        yield start


@pytest.fixture
async def gateway(start_gateway: StartGateway, tmp_path: Path) -> InProcessGateway:
    """The process tests' base config (echo provider, one seeded key), in process."""
    return await start_gateway(sqlite_config(tmp_path))


@pytest.fixture
async def fake_upstream() -> AsyncIterator[tuple[FakeUpstream, str]]:
    """tests/support/fake_upstream.py's app on this event loop: (its state, its /v1 base URL)."""
    upstream = FakeUpstream()
    runner = web.AppRunner(upstream.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield upstream, f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
