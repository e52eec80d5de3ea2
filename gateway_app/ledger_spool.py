"""The ledger's local spool: where usage rows go while the database cannot take them.

An append-only file of JSON lines, one ledger row each, fsync'd before the
writer counts the rows as kept. It is bounded in bytes: a full spool refuses
the append (the writer keeps the rows in memory and reports it). Rows are
replayed in file order once the database answers again; the database drops
rows it already has (unique ``event_key``), so a replay cut short by a crash or
a timeout is simply replayed again. The file is locked (flock) by its process:
two replicas can never share one spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("gateway.ledger_spool")


class SpoolUnavailable(Exception):
    """The spool file cannot be opened or locked; the message names the path and the fix."""


class LedgerSpool:
    def __init__(self, path: Path, max_bytes: int):
        self.path = path
        self.max_bytes = max_bytes
        self._fd = -1
        self._size = 0
        self._replayed = 0  # bytes at the head of the file already in the database
        self.rows = 0  # rows in the file not yet replayed (counted on open, then kept)
        self.full_refusals = 0  # appends refused because the spool was full
        self.corrupt_lines = 0  # torn or unreadable lines skipped on replay (a crash mid-append)

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise SpoolUnavailable(
                f"cannot open the ledger spool {self.path} ({exc.strerror}): "
                "set request_logging.spool_path to a writable file on a persistent volume"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise SpoolUnavailable(
                f"the ledger spool {self.path} is locked by another gateway process: "
                "give each replica its own request_logging.spool_path"
            ) from None
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._cut_torn_tail()
        self.rows = sum(1 for _ in self._lines(0)) if self._size else 0

    @property
    def pending(self) -> bool:
        return self._size > self._replayed

    @property
    def size(self) -> int:
        return self._size

    async def append(self, rows: list[tuple[Any, ...]]) -> bool:
        """Write and fsync ``rows``; False (nothing written) if they would exceed ``max_bytes``."""
        data = b"".join(orjson.dumps(row) + b"\n" for row in rows)
        if self._size + len(data) > self.max_bytes:
            self.full_refusals += len(rows)
            return False
        try:
            await asyncio.to_thread(self._write, data)
        except OSError as exc:
            # A full or failing disk under the spool: the rows stay with the writer.
            log.error("ledger spool %s write failed: %s", self.path, exc.strerror)
            os.ftruncate(self._fd, self._size)  # no partial line for the next append to extend
            return False
        self._size += len(data)
        self.rows += len(rows)
        return True

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def unreplayed(self, limit: int) -> tuple[list[list[Any]], int]:
        """Up to ``limit`` rows after the replayed head, in file order, and the offset after them."""
        rows: list[list[Any]] = []
        offset = self._replayed
        for line, end in self._lines(self._replayed):
            offset = end
            try:
                rows.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                self.corrupt_lines += 1
                log.error("ledger spool %s: unreadable line at byte %d skipped", self.path, end - len(line))
                continue
            if len(rows) >= limit:
                break
        return rows, offset

    def replayed(self, offset: int, rows: int) -> None:
        """The rows up to ``offset`` are in the database; once all are, the file is emptied."""
        self._replayed = offset
        self.rows = max(self.rows - rows, 0)
        if self._replayed >= self._size:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._size = self._replayed = 0
            self.rows = 0

    def _cut_torn_tail(self) -> None:
        """Drop a last line without its newline: an append cut by a crash, never acknowledged."""
        if not self._size or os.pread(self._fd, 1, self._size - 1) == b"\n":
            return
        keep = 0
        for _, end in self._lines(0):
            keep = end
        log.error("ledger spool %s: dropped a torn last line (%d bytes)", self.path, self._size - keep)
        os.ftruncate(self._fd, keep)
        self._size = keep

    def _lines(self, start: int):
        with open(self._fd, "rb", closefd=False) as f:
            f.seek(start)
            position = start
            for line in f:
                position += len(line)
                if line.endswith(b"\n"):
                    yield line[:-1], position

    def close(self) -> None:
        if self._fd >= 0:
            if not self._size:  # nothing kept: leave no empty file behind (still locked: no race)
                with contextlib.suppress(OSError):
                    self.path.unlink()
            os.close(self._fd)  # closing releases the flock
            self._fd = -1
