"""`gateway probe-endpoints`: time one GET <base_url>/models to every provider endpoint.

Run where the gateway runs (playbooks/provider_latency.yml calls it over the target
interface: on the host, in a one-off container, as a Kubernetes Job), so the numbers are
the gateway's own network path. Every probe is bounded by ``timeout``; all run at once.
No credential is sent: any HTTP answer (401 included) proves the endpoint reachable and
times the round trip (connect, TLS, response head); only no answer is a failure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit, urlunsplit

from gateway_app.config import GatewaySettings
from gateway_app.providers.http1 import HTTP1Client, HTTP1Error, Limits, header_line, parse_url

DEFAULT_REGION = "default"  # the region a provider's single base_url is reported under


def shown_url(url: str) -> str:
    """A URL as reports show it: without user info or query (where a credential could hide)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass
class ProbeResult:
    provider: str
    region: str
    url: str
    ok: bool
    status: int | None
    latency_ms: float
    error: str | None


def probe_targets(settings: GatewaySettings) -> list[tuple[str, str, str]]:
    """(provider, region, base_url) of every enabled or disabled provider with an HTTP base URL."""
    targets: list[tuple[str, str, str]] = []
    for provider in settings.providers:
        if provider.endpoints:
            targets += [(provider.name, e.region, e.base_url) for e in provider.endpoints]
        elif provider.base_url:
            targets.append((provider.name, DEFAULT_REGION, provider.base_url))
    return targets


async def _probe_one(
    client: HTTP1Client, provider: str, region: str, base_url: str, timeout: float
) -> ProbeResult:
    parts = urlsplit(base_url)
    url = urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/models"))
    target = parse_url(url)
    head = b"".join(
        [
            f"GET {target.path} HTTP/1.1\r\n".encode("latin-1"),
            header_line("Host", target.host_header),
            b"Accept-Encoding: identity\r\nConnection: close\r\n\r\n",
        ]
    )
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        async with asyncio.timeout(timeout):
            response = await client.request(target.origin, head)
            status = response.status
            response.release()
    except TimeoutError:
        error = f"no answer within {timeout:g} s"
    except HTTP1Error as exc:
        error = exc.reason
    latency_ms = round((time.perf_counter() - started) * 1000, 1)
    return ProbeResult(provider, region, shown_url(url), error is None, status, latency_ms, error)


async def probe_endpoints(settings: GatewaySettings, timeout: float) -> list[ProbeResult]:
    limits = Limits(
        max_connections=4,
        connect_timeout=timeout,
        pool_timeout=timeout,
        idle_timeout=timeout,
        max_body_bytes=1 << 20,
    )
    client = HTTP1Client(limits)
    try:
        return list(
            await asyncio.gather(
                *(_probe_one(client, *target, timeout) for target in probe_targets(settings))
            )
        )
    finally:
        await client.close()


def as_dicts(results: list[ProbeResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]
