"""The data plane: /v1/models, /v1/chat/completions, /v1/embeddings.

Per request: authenticate from the in-memory key cache, resolve the model,
try its routes in order until one answers, relay the answer (streams chunk by
chunk, never buffered), and hand a record to the background log writer.
Nothing on this path touches the database.

Every wait is bounded: the request deadline covers auth through the last byte of a
non-stream answer, ``max_stream_seconds`` a running stream, the provider's idle timeout
any silence of the upstream, and a client that goes away cancels the request (its
upstream connection is closed). Whatever fails, the client gets an OpenAI-shaped error
with the request id and the request log records the status the client got.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway_app.budgets import BudgetTracker, estimate_micros
from gateway_app.client_protocol import DISCONNECT_EXTENSION, DisconnectWatch
from gateway_app.clock import now_ms
from gateway_app.config import GatewaySettings
from gateway_app.http import (
    HTTPError,
    Receive,
    Scope,
    Send,
    bearer_token,
    check_declared_length,
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
from gateway_app.providers.http1 import DeadlineError, HTTP1Error, IdleTimeoutError
from gateway_app.ratelimit import RateLimiter
from gateway_app.request_log import Attempt, RequestLogWriter, RequestRecord, caller_tags
from gateway_app.response_cache import CACHE_PROVIDER, ZERO_PRICE, Lookup, ResponseCache
from gateway_app.routing import ModelEntry, Route, Router
from gateway_app.stream_usage import StreamRelay, ask_for_usage

if TYPE_CHECKING:
    from gateway_app.telemetry_sdk import RequestTracer

log = logging.getLogger("gateway.proxy")
access_log = logging.getLogger("gateway.access")

_SSE_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float
    record: RequestRecord
    identity: KeyIdentity | None = None
    deadline: float = 0.0  # loop time by which a non-stream answer must be complete
    responded: bool = False  # the response head has gone out


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
        cache: ResponseCache | None = None,
    ):
        self._settings = settings
        self._cache = cache  # None unless a model opts in: no cache step at all
        self._budgets = budgets
        self._metrics = metrics or RequestMetrics()
        self._limiter = limiter
        self._tracer = tracer
        self._keys = keys
        self._router = router
        self._writer = writer
        self._deadline = settings.server.request_timeout_seconds
        self._max_stream_seconds = settings.server.max_stream_seconds
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
        extensions = scope.get("extensions")
        watch: DisconnectWatch | None = extensions.get(DISCONNECT_EXTENSION) if extensions else None
        if watch is not None:
            watch.arm(asyncio.current_task())
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
            if not ctx.responded:
                await send_error(send, error, id_header)
        except asyncio.CancelledError:
            if watch is None or not watch.gone:
                raise
            # The client went away: its upstream call has been cancelled (and its connection closed).
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            ctx.record.status_code = 499
            ctx.record.error_code = "client_disconnected"
        except Exception:
            log.exception("request %s failed unexpectedly", request_id)
            ctx.record.status_code = 500
            ctx.record.error_code = "internal_error"
            await self._answer_internal_error(ctx, send, id_header)
        finally:
            if watch is not None:
                watch.arm(None)
            self._metrics.in_flight -= 1
            self._finish(ctx)

    @staticmethod
    async def _answer_internal_error(
        ctx: RequestContext, send: Send, headers: list[tuple[bytes, bytes]]
    ) -> None:
        try:
            if ctx.responded:  # mid-stream: end it; the client sees a stream without [DONE]
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                message = (
                    f"internal error in the gateway; quote request id {ctx.request_id} when reporting it"
                )
                await send_error(send, HTTPError(500, message, "internal_error", "api_error"), headers)
        except Exception:  # the connection itself is broken: nothing more to tell the client
            log.debug("could not answer request %s", ctx.request_id, exc_info=True)

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
        try:
            # Free on a cache hit; an id missing from the cache is looked up in the database
            # under keys.LOOKUP_TIMEOUT_SECONDS (a hung database does not hang the request).
            identity = await self._keys.authenticate(token) if token else None
        except Exception as exc:  # only that lookup can fail
            raise HTTPError(
                503,
                f"this API key is not in the gateway's cache and the key store did not answer "
                f"({exc.__class__.__name__}); retry shortly",
                "key_store_unavailable",
                "api_error",
            ) from None
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
        check_declared_length(scope, self._max_body)
        body = await read_body(receive, self._max_body)
        payload = parse_json_object(body)
        entry = self._resolve(operation, payload, ctx.identity)
        record.model = entry.name
        record.tags = caller_tags(scope["headers"])
        if self._writer.capture_payloads:
            record.request_body = body
        stream = operation == "chat" and payload.get("stream") is True
        record.stream = stream
        record.request_bytes = len(body)
        client_wants_usage = ask_for_usage(payload) if stream else True
        if self._writer.saturated:  # a request whose cost could not be recorded is not served
            raise HTTPError(
                503,
                "the gateway's usage ledger is behind its database; retry shortly",
                "ledger_backlog",
                "api_error",
            )
        if self._budgets is not None:  # in memory; before any provider call
            estimate = estimate_micros(entry.routes[0].price, len(body), payload)
            record.reserved_micros = self._budgets.admit(ctx.identity.service_account_id, estimate)
        cached: Lookup | None = None
        if self._cache is not None:  # after auth, grant, rate limit and budget: a hit bypasses none
            cached = await self._cache.lookup(
                entry.name, operation, payload, ctx.identity.service_account_id, scope
            )
            if cached is not None:
                headers = [*headers, cached.header]
                if cached.answer is not None:
                    await self._answer_from_cache(cached, ctx, send, headers)
                    return

        route, call = await self._open_with_fallback(operation, entry, payload, ctx)
        record.provider = route.provider_name
        record.upstream_model = route.upstream_model
        record.price = route.price
        if not stream:
            response = await self._read_whole(call, route, ctx)
            record.response_body = response
            record.relayed_bytes = len(response)
            record.status_code = call.status
            await send_response(send, call.status, response, call.content_type.encode(), headers)
            ctx.responded = True
            if cached is not None and self._cache is not None:
                self._cache.store_answer(
                    cached, call.status, call.content_type, response, route.upstream_model
                )
            return
        record.status_code = call.status
        await self._relay_stream(call, ctx, send, headers, StreamRelay(hide_usage=not client_wants_usage))

    @staticmethod
    async def _answer_from_cache(
        cached: Lookup, ctx: RequestContext, send: Send, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """A hit: no provider call; its ledger row names provider 'cache' at zero tokens and cost."""
        assert cached.answer is not None
        record = ctx.record
        record.provider = CACHE_PROVIDER
        record.upstream_model = cached.answer.upstream_model
        record.price = ZERO_PRICE
        record.usage = (0, 0)
        record.response_body = cached.answer.body
        record.relayed_bytes = len(cached.answer.body)
        record.status_code = 200
        await send_response(send, 200, cached.answer.body, cached.answer.content_type.encode(), headers)
        ctx.responded = True

    @staticmethod
    async def _read_whole(call: UpstreamCall, route: Route, ctx: RequestContext) -> bytes:
        """The upstream's non-stream body, within the request deadline and the provider's byte cap."""
        provider = route.provider_name
        try:
            return await call.read(ctx.deadline)
        except DeadlineError:
            reason = "did not finish its response before the request deadline"
            raise HTTPError(504, f"provider {provider} {reason}", "upstream_timeout", "api_error") from None
        except IdleTimeoutError as exc:
            message = f"provider {provider} stalled mid-response ({exc.reason})"
            raise HTTPError(504, message, "upstream_timeout", "api_error") from None
        except HTTP1Error as exc:
            message = f"provider {provider} failed mid-response ({exc.reason})"
            raise HTTPError(502, message, "upstream_error", "api_error") from None

    async def _open_with_fallback(
        self, operation: str, entry: ModelEntry, payload: dict[str, Any], ctx: RequestContext
    ) -> tuple[Route, UpstreamCall]:
        loop = asyncio.get_running_loop()
        deadline = ctx.deadline = loop.time() + self._deadline
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
                # A full connection pool is this gateway's limit, not the upstream's failure.
                if exc.kind != "busy":
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
        self,
        call: UpstreamCall,
        ctx: RequestContext,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        relay: StreamRelay,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": call.status,
                "headers": [(b"content-type", call.content_type.encode()), *_SSE_HEADERS, *headers],
            }
        )
        ctx.responded = True
        first = True
        try:
            async with asyncio.timeout(self._max_stream_seconds):
                async for chunk in call.chunks():
                    if first:
                        ctx.record.ttft_ms = int((time.perf_counter() - ctx.started) * 1000)
                        first = False
                    if out := relay.feed(chunk):
                        await send({"type": "http.response.body", "body": out, "more_body": True})
        except TimeoutError:
            ctx.record.error_code = "stream_deadline"
            log.warning("stream %s cut after max_stream_seconds", ctx.request_id)
        except Exception as exc:  # upstream broke mid-stream: the status is sent, so end the stream
            ctx.record.error_code = "stream_interrupted"
            log.warning("stream %s interrupted: %s", ctx.request_id, exc.__class__.__name__)
        finally:  # a cut stream (client gone, shutdown) still gets a ledger row, estimated if need be
            call.release()
            ctx.record.response_body = relay.usage_event
            ctx.record.relayed_bytes = relay.relayed_bytes
            ctx.record.relayed_events = relay.events
        await send({"type": "http.response.body", "body": relay.rest(), "more_body": False})


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
