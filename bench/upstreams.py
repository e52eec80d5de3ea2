"""The upstreams the gateway is measured against, each a real process on a free loopback port.

nginx answers POST /v1/chat/completions with a fixed chat completion and
POST /sse/v1/chat/completions with a fixed SSE stream: a near-zero-cost
upstream, so what the gateway adds is what shows. The split-stream upstream
(bench/stream_upstream.py) is for the first-chunk measurement.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench import BenchError
from tests.support.processes import Process, free_port, wait_http

CHAT_COMPLETION = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how may I help?"},'
    '"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":8,"total_tokens":17}}'
)
SSE_STREAM = "".join(
    f"data: {chunk}\n\n"
    for chunk in (
        '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
        '"choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"}}]}',
        '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
        '"choices":[{"index":0,"delta":{"content":" there"},"finish_reason":"stop"}]}',
        '{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini",'
        '"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}',
        "[DONE]",
    )
)

_NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    # wrk and the gateway's pool keep their connections: never close them after N requests.
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        location = /healthz {{ return 200 'ok'; }}
        location = /v1/chat/completions {{ default_type application/json; return 200 '{chat}'; }}
        location = /sse/v1/chat/completions {{ default_type text/event-stream; return 200 '{sse}'; }}
    }}
}}
"""


def find_nginx() -> str:
    # /usr/sbin is not on every user's PATH.
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BenchError("nginx not found: apt-get install nginx-light wrk")
    return found


class NginxUpstream(Process):
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root = workdir / "nginx"
        root.mkdir()
        conf = root / "nginx.conf"
        # The payloads hold no quote, backslash or '$', so they go verbatim into nginx strings.
        conf.write_text(_NGINX_CONF.format(tmp=root, port=self.port, chat=CHAT_COMPLETION, sse=SSE_STREAM))
        super().__init__(
            [find_nginx(), "-p", str(root), "-c", str(conf), "-e", str(root / "nginx-error.log")],
            root / "nginx.log",
        )
        wait_http(self.url + "/healthz", timeout=10, proc=self.proc)


class SplitStreamUpstream(Process):
    def __init__(self, workdir: Path, pause: float):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [sys.executable, "-m", "bench.stream_upstream", "--port", str(self.port), "--pause", str(pause)],
            workdir / f"stream-upstream-{self.port}.log",
        )
        _wait_listening(self.port, self.proc)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Until the port accepts connections (an HTTP probe would wait out the stream's pause)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the stream upstream exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise BenchError(f"the stream upstream on port {port} did not listen within {timeout:g} s")
