"""Optional OTLP/HTTP export of traces and metrics.

A collector is a nice-to-have: nothing here may block start-up or a request.
Spans are built after a request has finished (one per sampled request, with
its real start and end times) and exported by the SDK's batch processor on
its own thread; metrics are read from the in-process aggregates at export
time. A background probe keeps ``status`` current for ``/readyz``, which
reports an unreachable collector as a warning and stays ready.

The SDK's standard environment variables still apply, e.g.
``OTEL_BSP_SCHEDULE_DELAY`` and ``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

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
from gateway_app.config import ServerSettings

if TYPE_CHECKING:
    from gateway_app.metrics import RequestMetrics
    from gateway_app.request_log import RequestRecord
    from gateway_app.routing import Router

log = logging.getLogger("gateway.telemetry")

_EXPORT_TIMEOUT_SECONDS = 3.0
_PROBE_TIMEOUT_SECONDS = 1.0
_PROBE_EVERY_SECONDS = 30.0
_SHUTDOWN_WAIT_SECONDS = 5.0


def _signal_url(endpoint: str, path: str) -> str:
    """'http://collector:4318' -> 'http://collector:4318/v1/traces'; a full signal URL is kept."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(path) else endpoint + path


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or (443 if parts.scheme == "https" else 80)


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


class Telemetry:
    def __init__(self, settings: ServerSettings, metrics: RequestMetrics, router: Router):
        self._settings = settings
        self._metrics = metrics
        self._router = router
        self._resource = Resource.create({"service.name": "llm-gateway", "service.version": __version__})
        self._tracer_provider: TracerProvider | None = None
        self._meter_provider: MeterProvider | None = None
        self._probe: asyncio.Task[None] | None = None
        self.tracer: RequestTracer | None = None
        self.targets: dict[str, str] = {}  # signal -> URL
        self.status: dict[str, str] = {}  # signal -> "ok" | "unreachable: ..." | "not probed yet"

    @property
    def enabled(self) -> bool:
        return bool(self.targets)

    def start(self) -> None:
        """Builds exporters (no network I/O here) and starts the background reachability probe."""
        s = self._settings
        if s.otel_endpoint:
            self.targets["traces"] = _signal_url(s.otel_endpoint, "/v1/traces")
            self._tracer_provider = TracerProvider(resource=self._resource)
            self._tracer_provider.add_span_processor(
                BatchSpanProcessor(
                    OTLPSpanExporter(endpoint=self.targets["traces"], timeout=_EXPORT_TIMEOUT_SECONDS)
                )
            )
            self.tracer = RequestTracer(self._tracer_provider, s.otel_sample_ratio)
        metrics_endpoint = s.otel_metrics_endpoint or s.otel_endpoint
        if metrics_endpoint:
            self.targets["metrics"] = _signal_url(metrics_endpoint, "/v1/metrics")
            reader = PeriodicExportingMetricReader(
                OTLPMetricExporter(endpoint=self.targets["metrics"], timeout=_EXPORT_TIMEOUT_SECONDS)
            )
            self._meter_provider = MeterProvider(resource=self._resource, metric_readers=[reader])
            self._instruments(self._meter_provider)
        if self.enabled:
            self.status = dict.fromkeys(self.targets, "not probed yet")
            self._probe = asyncio.create_task(self._probe_loop(), name="otel-probe")

    def _instruments(self, provider: MeterProvider) -> None:
        meter = provider.get_meter("gateway_app", __version__)
        m = self._metrics

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
                for r in list(self._router.routes_by_key.values())
            ]

        meter.create_observable_counter("gateway.requests", [requests], description="API requests answered")
        meter.create_observable_up_down_counter("gateway.requests.in_flight", [in_flight])
        meter.create_observable_counter("gateway.tokens", [tokens], description="Tokens used")
        meter.create_observable_gauge(
            "gateway.circuit.state", [circuits], description="0 closed, 1 half-open, 2 open"
        )

    async def _probe_loop(self) -> None:
        warned: set[str] = set()
        while True:
            for signal, url in self.targets.items():
                host, port = _host_port(url)
                try:
                    async with asyncio.timeout(_PROBE_TIMEOUT_SECONDS):
                        _, writer = await asyncio.open_connection(host, port)
                    writer.close()
                    self.status[signal] = "ok"
                    warned.discard(signal)
                except (OSError, TimeoutError) as exc:
                    self.status[signal] = f"unreachable: {host}:{port} ({exc.__class__.__name__})"
                    if signal not in warned:
                        warned.add(signal)
                        log.warning(
                            "OTLP collector unreachable; %s are dropped until it answers, "
                            "requests and request logs are unaffected",
                            signal,
                            extra={"endpoint": f"{host}:{port}"},
                        )
            await asyncio.sleep(_PROBE_EVERY_SECONDS)

    def readiness(self) -> str | None:
        """A one-line summary for /readyz, or None when no collector is configured."""
        if not self.enabled:
            return None
        down = [
            f"{signal} at {state.removeprefix('unreachable: ')}"
            for signal, state in self.status.items()
            if state.startswith("unreachable")
        ]
        if down:
            return "unreachable: " + "; ".join(down)
        return "ok" if all(state == "ok" for state in self.status.values()) else "not probed yet"

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        for provider in (self._tracer_provider, self._meter_provider):
            if provider is not None:
                # The SDK flushes synchronously; an absent collector must not hold up the drain.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.to_thread(provider.shutdown), _SHUTDOWN_WAIT_SECONDS)
