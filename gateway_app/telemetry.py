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
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from gateway_app.config import ServerSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    from gateway_app.metrics import RequestMetrics
    from gateway_app.routing import Router
    from gateway_app.telemetry_sdk import RequestTracer

log = logging.getLogger("gateway.telemetry")

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


class Telemetry:
    def __init__(self, settings: ServerSettings, metrics: RequestMetrics, router: Router):
        self._settings = settings
        self._metrics = metrics
        self._router = router
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
        metrics_endpoint = s.otel_metrics_endpoint or s.otel_endpoint
        if not metrics_endpoint:  # neither endpoint set (a trace endpoint is the metrics' default)
            return
        # The SDK and its OTLP exporters take ~0.2 s to import: only gateways that export pay it.
        from gateway_app import telemetry_sdk

        if s.otel_endpoint:
            self.targets["traces"] = _signal_url(s.otel_endpoint, "/v1/traces")
            self._tracer_provider = telemetry_sdk.tracer_provider(self.targets["traces"])
            self.tracer = telemetry_sdk.RequestTracer(self._tracer_provider, s.otel_sample_ratio)
        self.targets["metrics"] = _signal_url(metrics_endpoint, "/v1/metrics")
        self._meter_provider = telemetry_sdk.meter_provider(
            self.targets["metrics"], self._metrics, self._router
        )
        self.status = dict.fromkeys(self.targets, "not probed yet")
        self._probe = asyncio.create_task(self._probe_loop(), name="otel-probe")

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
