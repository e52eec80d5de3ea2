"""The log writer and its spool in-process, on a real SQLite database: the cases a process test
cannot aim at precisely (one record that cannot be encoded, a full spool, a torn spool line)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway_app import migrations
from gateway_app.config import RequestLoggingSettings
from gateway_app.ledger_spool import LedgerSpool, SpoolUnavailable
from gateway_app.pricing import Price
from gateway_app.request_log import RequestLogWriter, RequestRecord
from gateway_app.storage import connect

_USAGE = orjson.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 4}})


def _record(number: int, request_body: bytes = b'{"messages": []}') -> RequestRecord:
    return RequestRecord(
        request_id=f"req-{number}",
        created_at=1_700_000_000_000 + number,
        operation="chat",
        status_code=200,
        latency_ms=1,
        model="m",
        provider="p",
        upstream_model="u",
        price=Price(1.0, 2.0),
        request_body=request_body,
        response_body=_USAGE,
    )


async def _database(tmp_path: Path):
    db = await connect(f"sqlite:///{tmp_path / 'writer.db'}")
    await migrations.apply(db)
    return db


async def test_a_record_that_cannot_be_encoded_is_dropped_alone(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    spool = LedgerSpool(tmp_path / "spool.jsonl", 1 << 20)
    spool.open()
    writer = RequestLogWriter(db, RequestLoggingSettings(mode="redacted_payloads"), spool)
    # 900 levels: orjson parses it, redaction recurses into it (RecursionError or an encode error).
    nested = b'{"messages": [], "x": ' + b"[" * 900 + b"]" * 900 + b"}"
    for number in range(10):
        writer.submit(_record(number, nested if number == 4 else b'{"messages": []}'))
    await writer.flush()
    assert writer.encode_errors == 1
    assert await db.fetchval("SELECT COUNT(*) FROM request_logs") == 9  # the others of its batch
    assert await db.fetchval("SELECT COUNT(*) FROM usage_cost_events") == 10  # its ledger row too
    assert await db.fetchval("SELECT request_id FROM usage_cost_events WHERE request_id = 'req-4'") == "req-4"
    await writer.stop()
    await db.close()


async def test_replaying_a_spool_twice_counts_each_row_once(tmp_path: Path) -> None:
    """A replay cut short (a crash before the spool was emptied) is replayed again: no double count."""
    db = await _database(tmp_path)
    path = tmp_path / "spool.jsonl"
    first = LedgerSpool(path, 1 << 20)
    first.open()
    row = ["key-1", "req-1", 1, None, None, "m", "p", "u", 3, 4, 11, "priced", False]
    assert await first.append([row, ["key-2", "req-2", *row[2:]]])
    first.close()
    # The same rows, once already in the database (the replay committed, the truncate did not happen).
    await db.executemany(
        "INSERT INTO usage_cost_events (event_key, request_id, created_at, api_key_id, service_account_id, "
        "model, provider, upstream_model, prompt_tokens, completion_tokens, cost_micros, pricing_status, "
        "estimated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        [tuple(row)],
    )
    spool = LedgerSpool(path, 1 << 20)
    spool.open()
    assert spool.rows == 2
    writer = RequestLogWriter(db, RequestLoggingSettings(), spool)
    await writer.flush()
    assert not spool.pending and path.stat().st_size == 0
    assert await db.fetchval("SELECT COUNT(*) FROM usage_cost_events") == 2  # key-1 once, key-2 once
    await writer.stop()
    await db.close()


async def test_a_full_spool_refuses_and_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    spool = LedgerSpool(path, 200)
    spool.open()
    row = ["key-1", "req-1", 1, None, None, "m", "p", "u", 3, 4, 11, "priced", False]
    assert await spool.append([row])
    assert not await spool.append([row, row, row])  # would pass 200 bytes
    assert spool.full_refusals == 3 and spool.rows == 1
    spool.close()
    with path.open("ab") as f:
        f.write(b'["key-2", "req-2"')  # a crash in the middle of an append
    reopened = LedgerSpool(path, 200)
    reopened.open()
    assert reopened.rows == 1 and path.read_bytes().endswith(b"\n")
    rows, _ = reopened.unreplayed(10)
    assert rows == [row]
    reopened.close()


def test_two_processes_cannot_share_a_spool(tmp_path: Path) -> None:
    first = LedgerSpool(tmp_path / "spool.jsonl", 1 << 20)
    first.open()
    second = LedgerSpool(tmp_path / "spool.jsonl", 1 << 20)
    with pytest.raises(SpoolUnavailable, match="locked by another gateway process"):
        second.open()
    first.close()


async def test_the_queue_is_bounded_in_bytes_shedding_detail_not_ledger(tmp_path: Path) -> None:
    db = await _database(tmp_path)
    spool = LedgerSpool(tmp_path / "spool.jsonl", 1 << 20)
    spool.open()
    settings = RequestLoggingSettings(mode="redacted_payloads", queue_max_bytes=64 * 1024)
    writer = RequestLogWriter(db, settings, spool)
    big = b'{"messages": [], "pad": "' + b"x" * 20_000 + b'"}'
    for number in range(10):
        writer.submit(_record(number, big))
    # 3 records of ~20 kB fit in 64 kB with their bodies; the other 7 keep only their ledger part.
    assert writer.queued_bytes <= 64 * 1024 + 7 * 1024
    assert writer.dropped == 7 and writer.depth == 10
    await writer.flush()
    assert await db.fetchval("SELECT COUNT(*) FROM request_logs") == 3
    assert await db.fetchval("SELECT COUNT(*) FROM usage_cost_events") == 10
    assert await db.fetchval("SELECT SUM(cost_micros) FROM usage_cost_events") == 10 * (3 + 2 * 4)
    await writer.stop()
    await db.close()
