"""Every gateway and operator CLI start imports only what its config uses.

redis-py (with the OpenTelemetry SDK it pulls in) and the OTLP exporters cost about 0.2 s of CPU
per process start; a gateway without Redis or a collector must not pay it (gateway_app/redis_client.py,
gateway_app/telemetry_sdk.py). The OTLP and Redis paths themselves are tested with real servers in
tests/test_observability.py and tests/test_response_cache.py.
"""

from __future__ import annotations

import subprocess
import sys

OPTIONAL_CLIENTS = {"redis", "opentelemetry"}


def test_server_and_cli_start_without_redis_or_otel_clients() -> None:
    probe = (
        "import sys, gateway_app.server, gateway_app.cli; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    imported = set(done.stdout.split())
    assert "gateway_app" in imported, done.stdout  # the probe saw the gateway's own modules
    assert not imported & OPTIONAL_CLIENTS, f"imported at start: {sorted(imported & OPTIONAL_CLIENTS)}"
