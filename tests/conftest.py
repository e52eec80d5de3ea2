"""Shared fixtures: throwaway databases on both backends, configs, real processes; and how
`make test` spreads the suite over pytest-xdist workers (tests/README.md)."""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway_app.keys import generate_key
from tests.support.processes import FakeUpstreamProcess, GatewayProcess, free_port, refused_port, run_cli

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["sqlite", "postgres"]

# How `make test` spreads the suite over pytest-xdist workers (tests/README.md): a file is one
# unit of work, run on one worker in file order (its module fixtures start once). The files
# listed here hold long tests that do not depend on each other: each test is its own unit, and
# each worker that runs some of them builds the session fixtures they use (a deployment) once.
PER_TEST_FILES = frozenset({"tests/playbooks/test_runbooks.py"})


def work_unit(nodeid: str) -> str:
    """The xdist unit of work a test belongs to: its file, or itself in PER_TEST_FILES."""
    path = nodeid.split("::", 1)[0]
    return nodeid if path in PER_TEST_FILES else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # Own scheduler: xdist's loadgroup renames items' nodeids, which pytest 9.2 no longer allows.
    from xdist.scheduler import LoadScopeScheduling

    # Units in collection order, not largest first: the directories of long process and playbook
    # tests (tests/playbooks, ...) sort before the many short test_*.py files and start first.
    config.option.loadscopereorder = False

    class WorkUnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Databases:
    """Creates throwaway databases and drops the PostgreSQL ones afterwards."""

    def __init__(self, tmp: Path):
        self._tmp = tmp
        self._pg: list[str] = []

    def new(self, backend: str) -> str:
        name = f"gwtest_{secrets.token_hex(6)}"
        if backend == "sqlite":
            return f"sqlite:///{self._tmp / (name + '.db')}"
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
        self._pg.append(name)
        return f"postgresql://postgres@127.0.0.1:5432/{name}"

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def drop_all(self) -> None:
        for name in self._pg:
            asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("databases"))
    yield dbs
    dbs.drop_all()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, databases: Databases) -> str:
    """A fresh, empty database on each backend in turn."""
    return databases.new(request.param)


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request: pytest.FixtureRequest, databases: Databases) -> str:
    """One fresh database per backend, shared by a module's tests (for long-lived gateways)."""
    return databases.new(request.param)


SEED_KEY = generate_key()
ADMIN_PASSWORD = "correct-horse-battery-staple"
BASE_ENV = {"GATEWAY_SEED_KEY": SEED_KEY, "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD}


def base_config(db_url: str, port: int | None = None) -> dict[str, Any]:
    """A working config: echo provider, one seeded key, migrations applied at start."""
    return {
        "server": {"host": "127.0.0.1", "port": port or free_port(), "shutdown_grace_seconds": 10},
        "database": {"url": f"literal.{db_url}", "migrations": "auto"},
        "providers": [{"name": "echo", "type": "echo"}],
        "models": [
            {
                "name": "echo-1",
                "operations": ["chat", "embeddings"],
                "routes": [{"provider": "echo", "upstream_model": "echo-1"}],
            }
        ],
        "auth": {
            "bootstrap_admin": {
                "enabled": True,
                "email": "admin@example.com",
                "password": "env.GATEWAY_BOOTSTRAP_ADMIN_PASSWORD",
                "require_password_change": False,
                "run_on_start": True,
            },
            "key_cache_refresh_seconds": 0.5,
        },
        "service_accounts": [
            {"name": "tests", "keys": [{"name": "seed", "secret": "env.GATEWAY_SEED_KEY", "models": "all"}]}
        ],
    }


class Launcher:
    """Starts real gateway and upstream processes and stops them all at the end."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self._procs: list[GatewayProcess | FakeUpstreamProcess] = []

    def upstream(self, mode: str = "ok") -> FakeUpstreamProcess:
        proc = FakeUpstreamProcess(self.workdir, mode)
        self._procs.append(proc)
        return proc

    def gateway(
        self, config: dict[str, Any], env: dict[str, str] | None = None, wait: bool = True, seed: bool = True
    ) -> GatewayProcess:
        full_env = {**BASE_ENV, **(env or {})}
        gateway = GatewayProcess(copy.deepcopy(config), self.workdir, env=full_env, wait=wait)
        self._procs.append(gateway)
        if wait and seed:
            seeded = run_cli("seed-config", "--config", str(gateway.config_path), env=full_env)
            assert seeded.returncode == 0, seeded.stderr
        return gateway

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            proc.stop()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launch = Launcher(tmp_path)
    yield launch
    launch.stop_all()


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launch = Launcher(tmp_path_factory.mktemp("processes"))
    yield launch
    launch.stop_all()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on for the whole test (tests.support.processes.refused_port)."""
    with refused_port() as port:
        yield port
