"""The OpenTelemetry SDK side of ``telemetry``: providers, OTLP/HTTP exporters, the request tracer.

Imported only by a gateway with a collector configured (``server.otel_endpoint`` or
``server.otel_metrics_endpoint``).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from gateway_app import __version__

if TYPE_CHECKING:
    from gateway_app.metrics import RequestMetrics
    from gateway_app.request_log import RequestRecord
    from gateway_app.routing import Router

_EXPORT_TIMEOUT_SECONDS = 3.0
_RESOURCE = {"service.name": "llm-gateway", "service.version": __version__}


def tracer_provider(url: str) -> TracerProvider:
    """Spans batched on the SDK's own thread and sent to ``url`` (no network I/O here)."""
    provider = TracerProvider(resource=Resource.create(_RESOURCE))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=url, timeout=_EXPORT_TIMEOUT_SECONDS))
    )
    return provider


def meter_provider(url: str, m: RequestMetrics, router: Router) -> MeterProvider:
    """The in-process aggregates, read at each export and sent to ``url``."""
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url, timeout=_EXPORT_TIMEOUT_SECONDS))
    provider = MeterProvider(resource=Resource.create(_RESOURCE), metric_readers=[reader])
    meter = provider.get_meter("gateway_app", __version__)

    def requests(options: CallbackOptions) -> list[Observation]:
        names = ("operation", "model", "provider", "upstream_model", "status_class")
        return [Observation(n, dict(zip(names, k, strict=True))) for k, n in list(m.requests.items())]

    def in_flight(options: CallbackOptions) -> list[Observation]:
        return [Observation(m.in_flight)]

    def tokens(options: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"model": k[0], "kind": k[1]}) for k, n in list(m.tokens.items())]

    def circuits(options: CallbackOptions) -> list[Observation]:
        return [
            Observation(r.health.state_code, {"route": r.key, "provider": r.provider_name})
            for r in list(router.routes_by_key.values())
        ]

    meter.create_observable_counter("gateway.requests", [requests], description="API requests answered")
    meter.create_observable_up_down_counter("gateway.requests.in_flight", [in_flight])
    meter.create_observable_counter("gateway.tokens", [tokens], description="Tokens used")
    meter.create_observable_gauge(
        "gateway.circuit.state", [circuits], description="0 closed, 1 half-open, 2 open"
    )
    return provider


class RequestTracer:
    """One span per sampled request, made after the request ended (off the response path)."""

    def __init__(self, provider: TracerProvider, ratio: float):
        self._tracer = provider.get_tracer("gateway_app", __version__)
        self._ratio = ratio

    def record(self, record: RequestRecord, seconds: float) -> None:
        if random.random() >= self._ratio:
            return
        end = time.time_ns()
        span = self._tracer.start_span(
            f"{record.operation} {record.model or ''}".strip(),
            kind=SpanKind.SERVER,
            start_time=end - int(seconds * 1e9),
            attributes={
                "gateway.request_id": record.request_id,
                "gateway.operation": record.operation,
                "gen_ai.request.model": record.model or "",
                "gateway.provider": record.provider or "",
                "gen_ai.response.model": record.upstream_model or "",
                "http.response.status_code": record.status_code,
                "gateway.attempts": len(record.attempts),
                "gateway.stream": record.stream,
            },
        )
        if record.status_code >= 500:
            span.set_status(Status(StatusCode.ERROR, record.error_code or ""))
        span.end(end_time=end)
