"""Fixtures of the fault suite: the fault upstream and a gateway in front of it, as real processes."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SEED_KEY, Databases, Launcher, base_config
from tests.faults.harness import FaultUpstreamProcess, gateway_config
from tests.support.processes import GatewayProcess, wait_until


@pytest.fixture
def fault_upstream(tmp_path: Path) -> Iterator[FaultUpstreamProcess]:
    upstream = FaultUpstreamProcess(tmp_path)
    yield upstream
    upstream.stop()


class FaultGateway:
    """A gateway (SQLite request log) whose only model, ``fault-1``, goes to the fault upstream."""

    def __init__(self, process: GatewayProcess, db_path: Path):
        self.process = process
        self.port = process.port
        self.pid = process.proc.pid
        self.key = SEED_KEY
        self._db_path = db_path

    def logged_status(self, request_id: str) -> int:
        """The status the request log recorded for ``request_id`` (waits for the writer)."""

        def lookup() -> int | None:
            with sqlite3.connect(self._db_path) as db:
                row = db.execute(
                    "SELECT status_code FROM request_logs WHERE request_id = ?", (request_id,)
                ).fetchone()
            return row[0] if row else None

        return wait_until(lookup, timeout=10)


@pytest.fixture
def fault_gateway(
    launcher: Launcher, databases: Databases, fault_upstream: FaultUpstreamProcess
) -> Callable[..., FaultGateway]:
    """``fault_gateway(server={...}, provider={...}, resilience={...})`` starts one."""

    def start(
        server: dict[str, Any] | None = None,
        provider: dict[str, Any] | None = None,
        resilience: dict[str, Any] | None = None,
    ) -> FaultGateway:
        db_url = databases.new("sqlite")
        config = gateway_config(base_config(db_url), fault_upstream.url, **(provider or {}))
        config["server"].update(server or {})
        if resilience:
            config["resilience"] = resilience
        return FaultGateway(launcher.gateway(config), Path(db_url.removeprefix("sqlite:///")))

    return start
