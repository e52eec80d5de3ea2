"""A background refresh: the way each replica keeps in-memory state close to the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("gateway.background")


class Periodic:
    """Runs ``work`` every ``interval`` seconds until stopped.

    A failed round is logged and the next one tries again: callers keep serving
    from their last good state, and readiness reports an unreachable database.
    """

    def __init__(self, name: str, interval: float, work: Callable[[], Awaitable[object]]):
        self.name = name
        self._interval = interval
        self._work = work
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._work()
            except Exception as exc:
                log.warning("%s failed: %s", self.name, exc.__class__.__name__)
