"""Fixtures of the fault suite: the fault upstream as a real process, stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultUpstreamProcess


@pytest.fixture
def fault_upstream(tmp_path: Path) -> Iterator[FaultUpstreamProcess]:
    upstream = FaultUpstreamProcess(tmp_path)
    yield upstream
    upstream.stop()
