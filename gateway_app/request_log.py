"""Request logs and the usage ledger, written off the request path; ledger rows are never lost.

The request path only appends a record to an in-memory queue bounded in count
and bytes. A background task parses usage, prices it and writes batches (sized
to the backend) in one transaction each. Two kinds of data leave differently:

- request-log detail (``request_logs`` and its children) may be shed under
  pressure: past the queue's bounds, while the database is unavailable, or when
  one record cannot be encoded. Every shed record is counted.
- ledger rows (``usage_cost_events``) are never shed. A write that fails on an
  outage (down, hung past ``write_timeout_seconds``, disk full) is retried
  once, then the rows go to the local spool (ledger_spool.py, fsync'd) and are
  replayed in order when the database takes writes again. Every row carries a
  unique ``event_key``: a replay never counts a row twice. Only when the queue's
  ledger headroom *and* the spool are full is a row lost, counted in
  ``ledger_lost`` and logged as an error.

On shutdown the queue is flushed, or spooled if the database does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import tempfile
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from gateway_app.config import RequestLoggingSettings
from gateway_app.ledger_spool import LedgerSpool
from gateway_app.pricing import Price, cost_micros
from gateway_app.storage import Database, OneAtATime, Transaction

log = logging.getLogger("gateway.request_log")

# Records per transaction when request_logging.batch_size is unset: SQLite has one writer and
# pays per transaction (fsync), so larger batches; PostgreSQL pipelines executemany.
BATCH_SIZES = {"sqlite": 1000, "postgres": 1000}
_RECORD_OVERHEAD_BYTES = 512  # a record's fields besides its bodies, for the byte bound
_ESTIMATED_BYTES_PER_TOKEN = 4
_ERROR_LOG_INTERVAL_SECONDS = 10.0
# Ledger-only places beyond ledger_queue_max for requests admitted before the queue saturated.
_IN_FLIGHT_MARGIN = 10_000

TAG_HEADERS = {
    b"x-gateway-service": "service",
    b"x-gateway-component": "component",
    b"x-gateway-env": "env",
}
TAGS_HEADER = b"x-gateway-tags"  # comma-separated k=v pairs
_REDACTED_FIELDS = frozenset({"api_key", "authorization", "password", "secret", "token"})


class SpendListener(Protocol):
    """Told of every record's spend once it leaves the queue (the budget tracker)."""

    def record(
        self, service_account_id: int | None, created_at: int, cost_micros: int, reserved_micros: int
    ) -> None:
        """Its ledger row committed or spooled (cost), or lost (its reservation as cost)."""

    def settling(self) -> AbstractAsyncContextManager[None]:
        """Held from a ledger commit until its records are told: no reload reads in between."""


@dataclass(slots=True)
class Attempt:
    provider: str
    upstream_model: str
    status_code: int | None
    error: str | None
    latency_ms: int


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    created_at: int
    operation: str
    status_code: int
    latency_ms: int
    model: str | None = None
    api_key_id: int | None = None
    service_account_id: int | None = None
    provider: str | None = None
    upstream_model: str | None = None
    price: Price | None = None
    stream: bool = False
    error_code: str | None = None
    ttft_ms: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    tags: list[tuple[str, str]] = field(default_factory=list)
    request_body: bytes | None = None
    # Whole JSON response, or the tail of a stream (where the usage chunk is).
    response_body: bytes | None = None
    # Budget reservation taken at admission, settled when the record leaves the queue.
    reserved_micros: int = 0
    # For a cost estimate when the upstream reports no usage.
    request_bytes: int = 0
    relayed_bytes: int = 0
    relayed_events: int = 0  # SSE data events relayed (about one token each)
    # Set when the record is kept without its detail (queue bounds): usage parsed at once.
    usage: tuple[int | None, int | None] | None = None
    detail: bool = True
    event_key: str | None = None  # the ledger row's idempotency key, given once by the writer


def parse_usage(body: bytes | None, stream: bool) -> tuple[int | None, int | None]:
    if not body:
        return None, None
    try:
        if not stream:
            usage = orjson.loads(body).get("usage") or {}
        else:
            usage = {}
            for line in body.split(b"\n"):
                if line.startswith(b"data: {") and b'"usage"' in line:
                    usage = orjson.loads(line[6:]).get("usage") or usage
    except (orjson.JSONDecodeError, AttributeError):
        return None, None
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "[redacted]" if k.lower() in _REDACTED_FIELDS else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _payload_text(body: bytes | None, cap: int) -> tuple[str | None, bool]:
    if body is None:
        return None, False
    try:
        text = orjson.dumps(_redact(orjson.loads(body))).decode()
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
    encoded = text.encode()
    if len(encoded) <= cap:
        return text, False
    return encoded[:cap].decode("utf-8", "ignore"), True  # cap in bytes, never a split character


_REQUEST_LOG_COLUMNS = (
    "request_id",
    "created_at",
    "api_key_id",
    "service_account_id",
    "operation",
    "model",
    "provider",
    "upstream_model",
    "stream",
    "status_code",
    "error_code",
    "latency_ms",
    "ttft_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_micros",
    "attempts",
)


_LEDGER_INSERT = (
    "INSERT INTO usage_cost_events (event_key, request_id, created_at, api_key_id, service_account_id, "
    "model, provider, upstream_model, prompt_tokens, completion_tokens, cost_micros, pricing_status, "
    "estimated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
    "ON CONFLICT (event_key) DO NOTHING"
)


@dataclass(slots=True, frozen=True)
class _Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: int  # micro-USD; 0 when there is no ledger row
    pricing_status: str
    ledger: bool  # a provider answered: the request has a usage_cost_events row
    estimated: bool  # the upstream reported no usage: tokens estimated from the bytes relayed


@dataclass(slots=True)
class _Detail:
    """One record's request-log rows, encoded before the transaction (an error stays with it)."""

    log_row: tuple[Any, ...]
    attempts: list[tuple[Any, ...]]
    tags: list[tuple[str, str]]
    payload: tuple[str | None, str | None, bool] | None


def _estimate_tokens(r: RequestRecord) -> tuple[int, int]:
    prompt = -(-r.request_bytes // _ESTIMATED_BYTES_PER_TOKEN)
    completion = r.relayed_events if r.stream else -(-r.relayed_bytes // _ESTIMATED_BYTES_PER_TOKEN)
    return prompt, completion


def default_spool_path(database_url: str, port: int) -> Path:
    digest = hashlib.sha256(f"{database_url}|{port}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"gateway-ledger-spool-{digest}.jsonl"


class RequestLogWriter:
    def __init__(
        self,
        db: Database,
        settings: RequestLoggingSettings,
        spool: LedgerSpool,
        on_spend: SpendListener | None = None,
    ):
        self._db = db
        self._settings = settings
        self._spool = spool
        self._on_spend = on_spend
        self._batch_size = settings.batch_size or BATCH_SIZES[db.backend]
        self._queue: deque[RequestRecord] = deque()
        self._queued_bytes = 0
        self._detailed = 0  # records in the queue that still carry their detail
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._next_replay = 0.0
        self._writes = OneAtATime("request-log write")
        self._event_prefix = secrets.token_hex(8) + "-"
        self._event_number = 0
        self._last_error_log = 0.0
        self.dropped = 0  # records whose request-log detail was shed because the queue was full
        self.shed = 0  # records whose request-log detail was shed because the database was unavailable
        self.encode_errors = 0  # records whose request-log detail could not be encoded or stored
        self.written = 0  # records written to the database (replayed ledger rows included)
        self.spooled = 0  # ledger rows written to the spool
        self.replayed = 0  # spooled ledger rows replayed into the database
        self.ledger_lost = 0  # ledger rows neither written nor spooled (queue and spool both full)
        self.database_available = True  # the last write (or replay) reached the database
        # Sees (record, prompt tokens, completion tokens, cost micros) of every record (metrics).
        self.usage_observer: Callable[[RequestRecord, int | None, int | None, int | None], None] | None = None

    @property
    def capture_payloads(self) -> bool:
        return self._settings.mode == "redacted_payloads"

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def write_errors(self) -> int:
        """Records lost to database errors: only ledger rows that neither the database nor the spool took."""
        return self.ledger_lost

    @property
    def spool(self) -> LedgerSpool:
        return self._spool

    @property
    def degraded(self) -> bool:
        """Ledger rows are waiting in the spool, or the last write did not reach the database."""
        return self._spool.pending or not self.database_available

    @property
    def saturated(self) -> bool:
        """The ledger headroom is used up: new requests are refused before they cost anything
        (requests already admitted still have ``_IN_FLIGHT_MARGIN`` places)."""
        return len(self._queue) - self._detailed >= self._settings.ledger_queue_max

    def submit(self, record: RequestRecord) -> None:
        """Called on the request path: O(1) (O(body) under pressure), never blocks, never raises."""
        size = _record_bytes(record)
        if (
            self._detailed < self._settings.queue_max
            and self._queued_bytes + size <= self._settings.queue_max_bytes
        ):
            self._enqueue(record, size)
            self._detailed += 1
            return
        self.dropped += 1  # the detail is shed; the ledger part is kept
        if record.model is None or record.provider is None:
            self._settle(record, 0)  # no ledger row: nothing else to keep
            return
        if len(self._queue) - self._detailed >= self._settings.ledger_queue_max + _IN_FLIGHT_MARGIN:
            self._lose([record], "the request-log queue's ledger headroom is full")
            return
        if record.usage is None:
            record.usage = parse_usage(record.response_body, record.stream)
        record.detail = False
        record.request_body = record.response_body = None
        record.attempts, record.tags = [], []
        self._enqueue(record, _record_bytes(record))

    def _enqueue(self, record: RequestRecord, size: int) -> None:
        self._queue.append(record)
        self._queued_bytes += size
        if len(self._queue) >= self._batch_size:
            self._wakeup.set()

    def _take(self) -> list[RequestRecord]:
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._batch_size))]
        for record in batch:
            self._queued_bytes -= _record_bytes(record)
            self._detailed -= record.detail
        return batch

    def _put_back(self, batch: list[RequestRecord]) -> None:
        """A batch neither the database nor the spool took goes back to the head of the queue."""
        for record in reversed(batch):
            self._queue.appendleft(record)
            self._queued_bytes += _record_bytes(record)
            self._detailed += record.detail

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="request-log-writer")

    async def stop(self) -> None:
        """Flush (or spool) everything queued, then stop (graceful shutdown).

        The loop is asked to finish rather than cancelled: a cancel could land inside a
        batch's transaction and lose records already taken off the queue. Every write has
        a deadline and the spool takes what the database does not, so this ends.
        """
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._next_replay = 0.0  # one more replay try; while the database is out, the rest is spooled
        while self._queue:
            if not await self._drain_once():
                self._lose(self._take(), "shutting down with the database and the spool unavailable")
        self._spool.close()

    async def _run(self) -> None:
        while not self._stopping:
            interval = self._settings.flush_interval_seconds
            if self._spool.pending:  # rows from an outage (or the last process) wait for replay
                interval = min(interval, self._settings.retry_seconds)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), interval)
            self._wakeup.clear()
            while self._queue or self._spool.pending:
                try:
                    moved = await self._drain_once()
                except Exception:  # a bug must not stop the writer: the records stay queued
                    log.exception("request log writer step failed")
                    moved = False
                if not moved:
                    break  # nothing moved (replay not due, spool full): wait for the next tick

    async def flush(self) -> int:
        """Write one batch now (tests and shutdown); the number of records that left the queue."""
        before = len(self._queue)
        await self._drain_once()
        return before - len(self._queue)

    async def _drain_once(self) -> bool:
        """One step: replay the spool, else write one batch, else spool it. True if anything moved."""
        if self._spool.pending:
            now = time.monotonic()
            if now >= self._next_replay:
                self._next_replay = now + self._settings.retry_seconds
                if await self._replay():
                    return True
            if not self._queue:
                return False
            # Rows behind a non-empty spool go to the spool too: replay keeps their order.
            batch = self._take()
            return await self._spool_batch(batch, [self._price(r) for r in batch], "behind spooled rows")
        if not self._queue:
            return False
        async with self._on_spend.settling() if self._on_spend else contextlib.nullcontext():
            await self._commit(self._take())
        return True

    async def _replay(self) -> bool:
        rows, offset = self._spool.unreplayed(self._batch_size)
        try:
            await self._bounded_write([tuple(row) for row in rows], [])
        except Exception as exc:  # an outage, or a refused row: retried at the next replay either way
            self._unavailable("ledger spool replay", exc)
            return False
        self.database_available = True
        self._spool.replayed(offset, len(rows))
        self.replayed += len(rows)
        self.written += len(rows)
        if not self._spool.pending:
            log.warning("ledger spool replayed: the database takes writes again")
        return True

    async def _commit(self, batch: list[RequestRecord]) -> None:
        priced = [self._price(r) for r in batch]
        ledger = [self._ledger_row(r, u) for r, u in zip(batch, priced, strict=True) if u.ledger]
        details = self._details(batch, priced)
        for attempt in range(2):  # retried once: a dropped connection or a failover is often brief
            try:
                await self._bounded_write(ledger, details)
                break
            except self._db.outage_errors as exc:
                if attempt or isinstance(exc, TimeoutError) or self._stopping:
                    self._unavailable("request log batch", exc)
                    await self._spool_batch(batch, priced, "database unavailable")
                    return
                await asyncio.sleep(0.2)
            except Exception as exc:
                # The database refused a value (not an outage): keep the ledger, store the
                # detail record by record so one bad record loses only its own.
                log.error(
                    "request log batch refused (%s): writing it record by record", exc.__class__.__name__
                )
                await self._commit_one_by_one(batch, priced, ledger, details)
                return
        self.database_available = True
        self.written += len(batch)
        for record, usage in zip(batch, priced, strict=True):
            self._settle(record, usage.cost)

    async def _commit_one_by_one(
        self,
        batch: list[RequestRecord],
        priced: list[_Usage],
        ledger: list[tuple[Any, ...]],
        details: list[_Detail | None],
    ) -> None:
        try:
            await self._bounded_write(ledger, [])
        except Exception as exc:
            self._unavailable("ledger rows", exc)
            await self._spool_batch(batch, priced, "ledger rows refused")
            return
        for index, detail in enumerate(details):
            if detail is None:
                continue
            try:
                await self._bounded_write([], [detail])
            except Exception as exc:
                self.encode_errors += 1
                log.error("request log %s not stored: %s", batch[index].request_id, exc.__class__.__name__)
        self.written += len(batch)
        for record, usage in zip(batch, priced, strict=True):
            self._settle(record, usage.cost)

    async def _spool_batch(self, batch: list[RequestRecord], priced: list[_Usage], why: str) -> bool:
        ledger = [self._ledger_row(r, u) for r, u in zip(batch, priced, strict=True) if u.ledger]
        if ledger and not await self._spool.append(ledger):
            self._log_error(
                "ledger spool %s cannot take %d rows (%s, %d of %d bytes used): kept in memory",
                self._spool.path, len(ledger), why, self._spool.size, self._spool.max_bytes,
            )  # fmt: skip
            self._put_back(batch)
            return False
        self.spooled += len(ledger)
        self.shed += sum(1 for r in batch if r.detail and self._settings.mode != "disabled")
        for record, usage in zip(batch, priced, strict=True):
            self._settle(record, usage.cost)
        return True

    def _unavailable(self, what: str, exc: BaseException) -> None:
        self.database_available = False
        self._log_error("%s not written, database unavailable: %s: %s", what, exc.__class__.__name__, exc)

    def _log_error(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_INTERVAL_SECONDS:  # an outage logs, it does not flood
            self._last_error_log = now
            log.error(message, *args)

    def _lose(self, records: list[RequestRecord], why: str) -> None:
        lost = [r for r in records if r.model is not None and r.provider is not None]
        self.ledger_lost += len(lost)
        if lost:
            self._log_error("%d ledger rows lost: %s", len(lost), why)
        for record in records:
            # The cost is unknown without parsing: the reservation stands for it.
            self._settle(record, record.reserved_micros)

    def _settle(self, record: RequestRecord, cost: int) -> None:
        if self._on_spend is not None and (cost or record.reserved_micros):
            self._on_spend.record(record.service_account_id, record.created_at, cost, record.reserved_micros)

    def _price(self, r: RequestRecord) -> _Usage:
        prompt_tokens, completion_tokens = (
            r.usage if r.usage is not None else parse_usage(r.response_body, r.stream)
        )
        ledger = r.model is not None and r.provider is not None
        estimated = (
            ledger and prompt_tokens is None and completion_tokens is None and 200 <= r.status_code < 300
        )
        if estimated:
            prompt_tokens, completion_tokens = _estimate_tokens(r)
        cost, pricing_status = cost_micros(r.price, prompt_tokens, completion_tokens)
        if self.usage_observer is not None:
            self.usage_observer(r, prompt_tokens, completion_tokens, cost)
        return _Usage(
            prompt_tokens, completion_tokens, cost if ledger else 0, pricing_status, ledger, estimated
        )

    def _ledger_row(self, r: RequestRecord, u: _Usage) -> tuple[Any, ...]:
        if r.event_key is None:
            self._event_number += 1  # unique: a random prefix per writer, a counter within it
            r.event_key = f"{self._event_prefix}{self._event_number:x}"
        return (
            r.event_key, r.request_id, r.created_at, r.api_key_id, r.service_account_id, r.model,
            r.provider, r.upstream_model, u.prompt_tokens, u.completion_tokens, u.cost,
            u.pricing_status, u.estimated,
        )  # fmt: skip

    def _details(self, batch: list[RequestRecord], priced: list[_Usage]) -> list[_Detail | None]:
        if self._settings.mode == "disabled":
            return []
        details: list[_Detail | None] = []
        cap = self._settings.max_payload_bytes
        for r, u in zip(batch, priced, strict=True):
            if not r.detail:
                details.append(None)
                continue
            try:
                payload = None
                if self.capture_payloads:
                    request_text, cut_request = _payload_text(r.request_body, cap)
                    response_text, cut_response = _payload_text(None if r.stream else r.response_body, cap)
                    payload = (request_text, response_text, cut_request or cut_response)
                details.append(
                    _Detail(
                        (
                            r.request_id, r.created_at, r.api_key_id, r.service_account_id, r.operation,
                            r.model, r.provider, r.upstream_model, r.stream, r.status_code, r.error_code,
                            r.latency_ms, r.ttft_ms, u.prompt_tokens, u.completion_tokens,
                            u.cost if r.provider else None, len(r.attempts),
                        ),
                        [
                            (number, a.provider, a.upstream_model, a.status_code, a.error, a.latency_ms)
                            for number, a in enumerate(r.attempts, start=1)
                        ],
                        list(r.tags),
                        payload,
                    )
                )  # fmt: skip
            except (RecursionError, ValueError, TypeError, MemoryError) as exc:
                # e.g. JSON nested too deep to redact: this record's detail only, never the batch.
                self.encode_errors += 1
                log.error("request log %s not encoded: %s", r.request_id, exc.__class__.__name__)
                details.append(None)
        return details

    async def _bounded_write(self, ledger: list[tuple[Any, ...]], details: list[_Detail | None]) -> None:
        """One transaction under write_timeout_seconds; never waits on a write left stuck before."""
        await self._writes.run(self._transaction(ledger, details), self._settings.write_timeout_seconds)

    async def _transaction(self, ledger: list[tuple[Any, ...]], details: list[_Detail | None]) -> None:
        async with self._db.transaction() as tx:
            await self._write(tx, ledger, details)

    async def _write(
        self, tx: Transaction, ledger: list[tuple[Any, ...]], details: list[_Detail | None]
    ) -> None:
        """One statement per table for the whole batch."""
        if ledger:
            await tx.executemany(_LEDGER_INSERT, ledger)
        stored = [d for d in details if d is not None]
        if not stored:
            return
        log_ids = await tx.insert_many("request_logs", _REQUEST_LOG_COLUMNS, [d.log_row for d in stored])
        attempts, tags, payloads = [], [], []
        for log_id, d in zip(log_ids, stored, strict=True):
            attempts += [(log_id, *a) for a in d.attempts]
            tags += [(log_id, name, value) for name, value in d.tags]
            if d.payload is not None:
                payloads.append((log_id, *d.payload))
        for sql, rows in (
            (
                "INSERT INTO request_log_attempts (request_log_id, attempt, provider, upstream_model, "
                "status_code, error, latency_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                attempts,
            ),
            ("INSERT INTO request_log_tags (request_log_id, name, value) VALUES ($1, $2, $3)", tags),
            (
                "INSERT INTO request_log_payloads (request_log_id, request_body, response_body, truncated) "
                "VALUES ($1, $2, $3, $4)",
                payloads,
            ),
        ):
            if rows:
                await tx.executemany(sql, rows)


def _record_bytes(record: RequestRecord) -> int:
    return len(record.request_body or b"") + len(record.response_body or b"") + _RECORD_OVERHEAD_BYTES


def caller_tags(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    tags: list[tuple[str, str]] = []
    for name, value in headers:
        if name in TAG_HEADERS:
            tags.append((TAG_HEADERS[name], value.decode("latin-1")[:200]))
        elif name == TAGS_HEADER:
            for pair in value.decode("latin-1").split(","):
                key, sep, val = pair.strip().partition("=")
                if sep and key:
                    tags.append((key[:64], val[:200]))
    return tags
