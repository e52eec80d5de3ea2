"""The data plane: /v1/models, /v1/chat/completions, /v1/embeddings.

Per request: authenticate from the in-memory key cache, resolve the model,
try its routes in order until one answers, relay the answer (streams chunk by
chunk, never buffered), and hand a record to the background log writer.
Nothing on this path touches the database.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from gateway_app.budgets import BudgetTracker
from gateway_app.clock import now_ms
from gateway_app.config import GatewaySettings
from gateway_app.http import (
    HTTPError,
    Receive,
    Scope,
    Send,
    bearer_token,
    header,
    invalid_api_key,
    invalid_request,
    model_not_found,
    parse_json_object,
    read_body,
    send_error,
    send_json,
    send_response,
)
from gateway_app.keys import KeyCache, KeyIdentity
from gateway_app.metrics import RequestMetrics
from gateway_app.providers import UpstreamCall, UpstreamError
from gateway_app.ratelimit import RateLimiter
from gateway_app.request_log import Attempt, RequestLogWriter, RequestRecord, caller_tags
from gateway_app.routing import ModelEntry, Route, Router
from gateway_app.telemetry import RequestTracer

log = logging.getLogger("gateway.proxy")
access_log = logging.getLogger("gateway.access")

_SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_STREAM_TAIL_CHUNKS = 3  # enough to hold the final usage chunk for the ledger


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float
    record: RequestRecord
    identity: KeyIdentity | None = None


def _request_id(scope: Scope) -> str:
    given = header(scope, b"x-request-id")
    if given and len(given) <= 64 and given.isascii():
        return given.decode()
    return secrets.token_hex(8)


class DataPlane:
    def __init__(
        self,
        settings: GatewaySettings,
        keys: KeyCache,
        router: Router,
        writer: RequestLogWriter,
        *,
        metrics: RequestMetrics | None = None,
        limiter: RateLimiter | None = None,
        tracer: RequestTracer | None = None,
        budgets: BudgetTracker | None = None,
    ):
        self._settings = settings
        self._budgets = budgets
        self._metrics = metrics or RequestMetrics()
        self._limiter = limiter
        self._tracer = tracer
        self._keys = keys
        self._router = router
        self._writer = writer
        self._deadline = settings.server.request_timeout_seconds
        self._max_attempts = settings.resilience.max_attempts
        self._backoff = settings.resilience.backoff_seconds
        self._max_body = settings.server.max_body_bytes
        self._access_log = settings.server.access_log

    # --- entry points -------------------------------------------------------

    async def handle(self, operation: str, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _request_id(scope)
        ctx = RequestContext(
            request_id,
            time.perf_counter(),
            RequestRecord(
                request_id=request_id, created_at=now_ms(), operation=operation, status_code=0, latency_ms=0
            ),
        )
        id_header = [(b"x-request-id", request_id.encode())]
        self._metrics.in_flight += 1
        try:
            ctx.identity = await self._authenticate(scope)
            if self._limiter is not None:
                await self._limiter.check(ctx.identity)
            ctx.record.api_key_id = ctx.identity.key_id
            ctx.record.service_account_id = ctx.identity.service_account_id
            if operation == "models":
                await self._list_models(ctx, send, id_header)
            else:
                await self._forward(operation, ctx, scope, receive, send, id_header)
        except HTTPError as error:
            ctx.record.status_code = error.status
            ctx.record.error_code = error.code
            await send_error(send, error, id_header)
        finally:
            self._metrics.in_flight -= 1
            self._finish(ctx)

    def _finish(self, ctx: RequestContext) -> None:
        record = ctx.record
        elapsed = time.perf_counter() - ctx.started
        record.latency_ms = int(elapsed * 1000)
        self._metrics.observe(record, elapsed)
        if self._tracer is not None:
            self._tracer.record(record, elapsed)
        if record.operation != "models":
            self._writer.submit(record)
        if self._access_log:
            access_log.info(
                "request",
                extra={
                    "request_id": record.request_id,
                    "operation": record.operation,
                    "model": record.model,
                    "status": record.status_code,
                    "latency_ms": record.latency_ms,
                    "provider": record.provider,
                    "attempts": len(record.attempts),
                    "key": ctx.identity.public_id if ctx.identity else None,
                },
            )

    async def _authenticate(self, scope: Scope) -> KeyIdentity:
        token = bearer_token(scope)
        identity = await self._keys.authenticate(token) if token else None
        if identity is None:
            raise invalid_api_key()
        return identity

    # --- /v1/models ----------------------------------------------------------

    async def _list_models(self, ctx: RequestContext, send: Send, headers: list[tuple[bytes, bytes]]) -> None:
        assert ctx.identity is not None
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "gateway"}
            for name, entry in self._router.models.items()
            if ctx.identity.may_use(name) and any(self._router.eligible(r) for r in entry.routes)
        ]
        ctx.record.status_code = 200
        await send_json(send, 200, {"object": "list", "data": data}, headers)

    # --- chat and embeddings -------------------------------------------------

    def _resolve(self, operation: str, payload: dict[str, Any], identity: KeyIdentity) -> ModelEntry:
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise invalid_request("'model' is required and must be a string", param="model")
        entry = self._router.models.get(model)
        if entry is None or not identity.may_use(model):
            raise model_not_found(model)
        if operation not in entry.operations:
            raise invalid_request(f"model '{model}' does not support {operation}", param="model")
        if operation == "chat":
            messages = payload.get("messages")
            if not isinstance(messages, list) or not messages:
                raise invalid_request("'messages' must be a non-empty array", param="messages")
            if "stream" in payload and not isinstance(payload["stream"], bool):
                raise invalid_request("'stream' must be a boolean", param="stream")
        elif not isinstance(payload.get("input"), str | list) or not payload.get("input"):
            raise invalid_request("'input' must be a non-empty string or array", param="input")
        return entry

    async def _forward(
        self,
        operation: str,
        ctx: RequestContext,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        assert ctx.identity is not None
        record = ctx.record
        body = await read_body(receive, self._max_body)
        payload = parse_json_object(body)
        entry = self._resolve(operation, payload, ctx.identity)
        record.model = entry.name
        record.tags = caller_tags(scope["headers"])
        if self._writer.capture_payloads:
            record.request_body = body
        stream = operation == "chat" and payload.get("stream") is True
        record.stream = stream
        if self._budgets is not None:
            self._budgets.check(ctx.identity.service_account_id)  # in memory; before any provider call

        route, call = await self._open_with_fallback(operation, entry, payload, ctx)
        record.provider = route.provider_name
        record.upstream_model = route.upstream_model
        record.price = route.price
        record.status_code = call.status
        if not stream:
            response = await call.read()
            record.response_body = response
            await send_response(send, call.status, response, call.content_type.encode(), headers)
            return
        await self._relay_stream(call, ctx, send, headers)

    async def _open_with_fallback(
        self, operation: str, entry: ModelEntry, payload: dict[str, Any], ctx: RequestContext
    ) -> tuple[Route, UpstreamCall]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._deadline
        plan = self._router.plan(entry)
        if not plan:
            raise HTTPError(
                503, f"model '{entry.name}' has no enabled route right now", "no_route_available", "api_error"
            )
        last_error: UpstreamError | None = None
        number = 0
        for route in plan:
            remaining = deadline - loop.time()
            if number >= self._max_attempts or remaining <= 0:
                break
            if not route.health.allow(time.monotonic()):
                continue  # open circuit: skipped without waiting on it
            if number and self._backoff:
                await asyncio.sleep(min(self._backoff * number, remaining))
                remaining = deadline - loop.time()
            number += 1
            payload["model"] = route.upstream_model
            started = time.perf_counter()
            try:
                call = await route.provider.open(operation, orjson.dumps(payload), remaining)
            except UpstreamError as exc:
                elapsed = time.perf_counter() - started
                # A refused request (400) says the upstream is up: only retryable failures trip the breaker.
                if exc.retryable:
                    route.health.failed(elapsed, str(exc))
                else:
                    route.health.succeeded(elapsed)
                ctx.record.attempts.append(
                    Attempt(
                        route.provider_name, route.upstream_model, exc.status, str(exc), int(elapsed * 1000)
                    )
                )
                last_error = exc
                if not exc.retryable:
                    break
                continue
            elapsed = time.perf_counter() - started
            route.health.succeeded(elapsed)
            ctx.record.attempts.append(
                Attempt(route.provider_name, route.upstream_model, call.status, None, int(elapsed * 1000))
            )
            return route, call
        if number == 0 and deadline > loop.time():
            raise HTTPError(
                503,
                f"every route of model '{entry.name}' has an open circuit (failing upstreams); retry shortly",
                "no_route_available",
                "api_error",
            )
        raise _client_error(entry.name, last_error)

    async def _relay_stream(
        self, call: UpstreamCall, ctx: RequestContext, send: Send, headers: list[tuple[bytes, bytes]]
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": call.status,
                "headers": [(b"content-type", call.content_type.encode()), *_SSE_HEADERS, *headers],
            }
        )
        tail: list[bytes] = []
        first = True
        try:
            async for chunk in call.chunks():
                if first:
                    ctx.record.ttft_ms = int((time.perf_counter() - ctx.started) * 1000)
                    first = False
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                tail.append(chunk)
                if len(tail) > _STREAM_TAIL_CHUNKS:
                    del tail[0]
        except Exception as exc:  # upstream broke mid-stream: the status is sent, so end the stream
            ctx.record.error_code = "stream_interrupted"
            log.warning("stream %s interrupted: %s", ctx.request_id, exc.__class__.__name__)
        ctx.record.response_body = b"".join(tail)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _client_error(model: str, error: UpstreamError | None) -> HTTPError:
    if error is None:
        return HTTPError(
            504,
            f"no route of '{model}' answered before the request deadline",
            "upstream_timeout",
            "api_error",
        )
    if (
        error.kind == "http"
        and error.status is not None
        and 400 <= error.status < 500
        and error.status != 429
    ):
        # The upstream refused the request itself (bad parameters): pass its answer through.
        try:
            upstream = orjson.loads(error.body).get("error", {})
            message = upstream.get("message") or str(error)
        except (orjson.JSONDecodeError, AttributeError):
            message = str(error)
        return HTTPError(error.status, message, "upstream_rejected_request")
    if error.kind == "timeout":
        return HTTPError(504, f"{error} (model '{model}')", "upstream_timeout", "api_error")
    return HTTPError(
        502, f"{error} (model '{model}'); no other route succeeded", "upstream_error", "api_error"
    )
