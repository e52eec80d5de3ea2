"""Request logs and the usage ledger, written off the request path.

The request path only appends a record to a bounded in-memory queue. A
background task parses usage, prices it and writes batches in one transaction.
A full queue drops the newest records and counts them (``dropped``), so a slow
database can never stall or grow the gateway without bound. On shutdown the
queue is drained before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway_app.config import RequestLoggingSettings
from gateway_app.pricing import Price, cost_micros
from gateway_app.storage import Database, Transaction

log = logging.getLogger("gateway.request_log")

TAG_HEADERS = {
    b"x-gateway-service": "service",
    b"x-gateway-component": "component",
    b"x-gateway-env": "env",
}
TAGS_HEADER = b"x-gateway-tags"  # comma-separated k=v pairs
_REDACTED_FIELDS = frozenset({"api_key", "authorization", "password", "secret", "token"})
# Told (service_account_id, created_at, cost_micros) for each ledger row once it is committed.
SpendListener = Callable[[int | None, int, int], None]


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


@dataclass(slots=True, frozen=True)
class _Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    cost: int  # micro-USD; 0 when there is no ledger row
    pricing_status: str
    ledger: bool  # a provider answered: the request has a usage_cost_events row


class RequestLogWriter:
    def __init__(self, db: Database, settings: RequestLoggingSettings, on_spend: SpendListener | None = None):
        self._db = db
        self._settings = settings
        self._on_spend = on_spend
        self._queue: deque[RequestRecord] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.dropped = 0
        self.written = 0
        self.write_errors = 0
        # Sees (record, prompt tokens, completion tokens, cost micros) of every record (metrics).
        self.usage_observer: Callable[[RequestRecord, int | None, int | None, int | None], None] | None = None

    @property
    def capture_payloads(self) -> bool:
        return self._settings.mode == "redacted_payloads"

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, record: RequestRecord) -> None:
        """Called on the request path: O(1), never blocks, never raises."""
        if len(self._queue) >= self._settings.queue_max:
            self.dropped += 1
            return
        self._queue.append(record)
        if len(self._queue) >= self._settings.batch_size:
            self._wakeup.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="request-log-writer")

    async def stop(self) -> None:
        """Flush everything queued, then stop (graceful shutdown).

        The loop is asked to finish rather than cancelled: a cancel could land inside a
        batch's transaction and lose records already taken off the queue.
        """
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        while self._queue:
            await self.flush()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._settings.flush_interval_seconds)
            self._wakeup.clear()
            while self._queue:
                await self.flush()

    async def flush(self) -> int:
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._settings.batch_size))]
        if not batch:
            return 0
        priced = [self._price(record) for record in batch]
        try:
            async with self._db.transaction() as tx:
                await self._write(tx, batch, priced)
        except Exception as exc:
            # The batch is lost rather than retried forever; the count makes it visible.
            self.write_errors += len(batch)
            log.error("request log batch of %d not written: %s", len(batch), exc.__class__.__name__)
            return 0
        self.written += len(batch)
        if self._on_spend is not None:
            for record, usage in zip(batch, priced, strict=True):
                if usage.ledger:
                    self._on_spend(record.service_account_id, record.created_at, usage.cost)
        return len(batch)

    def _price(self, r: RequestRecord) -> _Usage:
        prompt_tokens, completion_tokens = parse_usage(r.response_body, r.stream)
        cost, pricing_status = cost_micros(r.price, prompt_tokens, completion_tokens)
        if self.usage_observer is not None:
            self.usage_observer(r, prompt_tokens, completion_tokens, cost)
        ledger = r.model is not None and r.provider is not None
        return _Usage(prompt_tokens, completion_tokens, cost if ledger else 0, pricing_status, ledger)

    async def _write(self, tx: Transaction, batch: list[RequestRecord], priced: list[_Usage]) -> None:
        """One statement per table for the whole batch: the ledger always, the logs unless disabled."""
        ledger = [
            (r.request_id, r.created_at, r.api_key_id, r.service_account_id, r.model, r.provider,
             r.upstream_model, u.prompt_tokens, u.completion_tokens, u.cost, u.pricing_status)
            for r, u in zip(batch, priced, strict=True)
            if u.ledger
        ]  # fmt: skip
        if ledger:
            await tx.executemany(
                "INSERT INTO usage_cost_events (request_id, created_at, api_key_id, service_account_id, "
                "model, provider, upstream_model, prompt_tokens, completion_tokens, cost_micros, "
                "pricing_status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                ledger,
            )
        if self._settings.mode == "disabled":
            return
        log_ids = await tx.insert_many(
            "request_logs",
            _REQUEST_LOG_COLUMNS,
            [
                (
                    r.request_id,
                    r.created_at,
                    r.api_key_id,
                    r.service_account_id,
                    r.operation,
                    r.model,
                    r.provider,
                    r.upstream_model,
                    r.stream,
                    r.status_code,
                    r.error_code,
                    r.latency_ms,
                    r.ttft_ms,
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.cost if r.provider else None,
                    len(r.attempts),
                )
                for r, u in zip(batch, priced, strict=True)
            ],
        )
        attempts, tags, payloads = [], [], []
        cap = self._settings.max_payload_bytes
        for log_id, r in zip(log_ids, batch, strict=True):
            attempts += [
                (log_id, number, a.provider, a.upstream_model, a.status_code, a.error, a.latency_ms)
                for number, a in enumerate(r.attempts, start=1)
            ]
            tags += [(log_id, name, value) for name, value in r.tags]
            if self.capture_payloads:
                request_text, cut_request = _payload_text(r.request_body, cap)
                response_text, cut_response = _payload_text(None if r.stream else r.response_body, cap)
                payloads.append((log_id, request_text, response_text, cut_request or cut_response))
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
