"""Read side of the request logs and the ledger: filtered listings, one request's detail, spend reports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway_app.budgets import usd
from gateway_app.errors import NotFound
from gateway_app.keys import normalize_public_id
from gateway_app.storage import Executor, Row

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
DAY_MS = 86_400_000
SPEND_GROUPS = {
    "service_account": "s.name",
    "key": "k.public_id",
    "model": "e.model",
    "day": f"(e.created_at / {DAY_MS})",
}
_STATUS_CLASSES = {"2xx": (200, 300), "4xx": (400, 500), "5xx": (500, 600), "error": (400, 600)}


def parse_time(text: str, name: str) -> int:
    """Epoch milliseconds, or ISO 8601 (``2025-01-31``, ``2025-01-31T12:00:00Z``; UTC if no offset)."""
    if text.isdigit():
        return int(text)
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name} must be epoch milliseconds or ISO 8601 like 2025-01-31T12:00:00Z") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1000)


class _Where:
    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.args: list[Any] = []

    def add(self, clause: str, *values: Any) -> None:
        # "{}" in the clause stands for the next placeholders, numbered in order.
        numbers = [f"${len(self.args) + i + 1}" for i in range(len(values))]
        self.clauses.append(clause.format(*numbers))
        self.args.extend(values)

    def sql(self) -> str:
        return "WHERE " + " AND ".join(self.clauses) if self.clauses else ""


def _time_range(where: _Where, filters: dict[str, str], column: str) -> None:
    if filters.get("since"):
        where.add(f"{column} >= {{}}", parse_time(filters["since"], "since"))
    if filters.get("until"):
        where.add(f"{column} < {{}}", parse_time(filters["until"], "until"))


_SUMMARY_FROM = (
    "FROM request_logs r LEFT JOIN api_keys k ON k.id = r.api_key_id "
    "LEFT JOIN service_accounts s ON s.id = r.service_account_id"
)


def _summary(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "request_id": row["request_id"],
        "created_at": row["created_at"],
        "key": row["public_id"],
        "service_account": row["account_name"],
        "operation": row["operation"],
        "model": row["model"],
        "provider": row["provider"],
        "upstream_model": row["upstream_model"],
        "stream": bool(row["stream"]),
        "status_code": row["status_code"],
        "error_code": row["error_code"],
        "latency_ms": row["latency_ms"],
        "ttft_ms": row["ttft_ms"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "cost_usd": usd(row["cost_micros"]) if row["cost_micros"] is not None else None,
        "attempts": row["attempts"],
    }


async def list_request_logs(db: Executor, filters: dict[str, str]) -> list[dict[str, Any]]:
    """Newest first. Filters: since, until, model, status (code, 2xx/4xx/5xx or error), key,
    service_account, before_id (paging), limit."""
    where = _Where()
    _time_range(where, filters, "r.created_at")
    if filters.get("model"):
        where.add("r.model = {}", filters["model"])
    status = filters.get("status")
    if status:
        if status in _STATUS_CLASSES:
            where.add("r.status_code >= {} AND r.status_code < {}", *_STATUS_CLASSES[status])
        elif status.isdigit():
            where.add("r.status_code = {}", int(status))
        else:
            raise ValueError("status must be an HTTP status code, 2xx, 4xx, 5xx or error")
    if filters.get("key"):
        where.add("k.public_id = {}", normalize_public_id(filters["key"]))
    if filters.get("service_account"):
        where.add("s.name = {}", filters["service_account"])
    if filters.get("before_id"):
        if not filters["before_id"].isdigit():
            raise ValueError("before_id must be a request log id")
        where.add("r.id < {}", int(filters["before_id"]))
    limit = filters.get("limit") or str(DEFAULT_LIMIT)
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
    rows = await db.fetch(
        f"SELECT r.*, k.public_id, s.name AS account_name {_SUMMARY_FROM} {where.sql()} "
        f"ORDER BY r.created_at DESC, r.id DESC LIMIT {int(limit)}",
        *where.args,
    )
    return [_summary(row) for row in rows]


async def request_log_detail(db: Executor, ident: str) -> dict[str, Any]:
    """By request log id, or by the request id the caller saw in x-request-id."""
    select = f"SELECT r.*, k.public_id, s.name AS account_name {_SUMMARY_FROM} WHERE "
    row = await db.fetchrow(select + "r.id = $1", int(ident)) if ident.isdigit() and len(ident) < 19 else None
    if row is None:
        row = await db.fetchrow(select + "r.request_id = $1 ORDER BY r.id DESC LIMIT 1", ident)
    if row is None:
        raise NotFound(f"no request log '{ident}'")
    detail = _summary(row)
    attempts = await db.fetch(
        "SELECT attempt, provider, upstream_model, status_code, error, latency_ms "
        "FROM request_log_attempts WHERE request_log_id = $1 ORDER BY attempt",
        row["id"],
    )
    detail["attempts"] = [dict(a) for a in attempts]
    tags = await db.fetch(
        "SELECT name, value FROM request_log_tags WHERE request_log_id = $1 ORDER BY name", row["id"]
    )
    detail["tags"] = {t["name"]: t["value"] for t in tags}
    payload = await db.fetchrow(
        "SELECT request_body, response_body, truncated FROM request_log_payloads WHERE request_log_id = $1",
        row["id"],
    )
    detail["payload"] = (
        {
            "request_body": payload["request_body"],
            "response_body": payload["response_body"],
            "truncated": bool(payload["truncated"]),
        }
        if payload
        else None
    )
    return detail


async def spend_report(db: Executor, group_by: str, filters: dict[str, str]) -> list[dict[str, Any]]:
    """Ledger totals per group; ``unpriced`` counts requests whose cost is unknown (not in the totals)."""
    expression = SPEND_GROUPS.get(group_by)
    if expression is None:
        raise ValueError(f"group_by must be one of {', '.join(SPEND_GROUPS)}")
    where = _Where()
    _time_range(where, filters, "e.created_at")
    rows = await db.fetch(
        f"SELECT {expression} AS grp, COUNT(*) AS requests, SUM(e.prompt_tokens) AS prompt_tokens, "
        "SUM(e.completion_tokens) AS completion_tokens, SUM(e.cost_micros) AS cost_micros, "
        "SUM(CASE WHEN e.pricing_status = 'priced' THEN 0 ELSE 1 END) AS unpriced "
        "FROM usage_cost_events e LEFT JOIN api_keys k ON k.id = e.api_key_id "
        f"LEFT JOIN service_accounts s ON s.id = e.service_account_id {where.sql()} "
        f"GROUP BY {expression} ORDER BY {expression}",
        *where.args,
    )
    report = []
    for row in rows:
        group = row["grp"]
        if group_by == "day" and group is not None:
            group = datetime.fromtimestamp(int(group) * DAY_MS / 1000, UTC).strftime("%Y-%m-%d")
        report.append(
            {
                "group": group,
                "requests": int(row["requests"]),
                "prompt_tokens": int(row["prompt_tokens"] or 0),
                "completion_tokens": int(row["completion_tokens"] or 0),
                "cost_usd": usd(int(row["cost_micros"] or 0)),
                "unpriced": int(row["unpriced"] or 0),
            }
        )
    return report


async def traffic(db: Executor, since_ms: int, until_ms: int) -> dict[str, Any]:
    """Requests and errors logged in [since, until): the overview's request and error rates.

    ``errors`` are 5xx answers (the gateway's or its upstreams' fault); 4xx are counted apart.
    """
    row = await db.fetchrow(
        "SELECT COUNT(*) AS requests, "
        "SUM(CASE WHEN status_code >= 500 THEN 1 ELSE 0 END) AS errors, "
        "SUM(CASE WHEN status_code >= 400 AND status_code < 500 THEN 1 ELSE 0 END) AS client_errors "
        "FROM request_logs WHERE created_at >= $1 AND created_at < $2",
        since_ms,
        until_ms,
    )
    requests = int(row["requests"] or 0)
    errors = int(row["errors"] or 0)
    minutes = max((until_ms - since_ms) / 60_000, 1 / 60)
    return {
        "since": since_ms,
        "until": until_ms,
        "requests": requests,
        "errors": errors,
        "client_errors": int(row["client_errors"] or 0),
        "requests_per_minute": round(requests / minutes, 2),
        "error_rate": round(errors / requests, 4) if requests else 0.0,
    }
