"""Real processes for tests: the gateway and the fake upstream, on free loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections while the block runs: bound here and never
    listened on. A free_port() nobody holds can be taken by a parallel test's server, which then
    answers where a test expects nothing to listen."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def wait_http(
    url: str, timeout: float = 60.0, expect: int = 200, proc: subprocess.Popen | None = None
) -> None:
    # Generous: a bound on start-up next to a parallel suite on a shared 2-core machine (20 s
    # was exceeded twice there), not a speed check; a process that dies ends the wait at once.
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} while waiting for {url}")
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == expect:
                return
            last = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = exc.__class__.__name__
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s ({last})")


def wait_until(check, timeout: float = 10.0):
    """Poll ``check`` until it returns something true, and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)
    return result


class Process:
    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path = REPO):
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
        )

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class FakeUpstreamProcess(Process):
    def __init__(self, log_dir: Path, mode: str = "ok"):
        self.port = free_port()
        super().__init__(
            [sys.executable, "-m", "tests.support.fake_upstream", "--port", str(self.port), "--mode", mode],
            log_dir / f"upstream-{self.port}.log",
        )
        self.url = f"http://127.0.0.1:{self.port}/v1"
        wait_http(f"http://127.0.0.1:{self.port}/_stats", proc=self.proc)

    def control(self, **settings: Any) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_control", json=settings, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"http://127.0.0.1:{self.port}/_stats", timeout=5).json()


class GatewayProcess(Process):
    def __init__(
        self, config: dict[str, Any], workdir: Path, env: dict[str, str] | None = None, wait: bool = True
    ):
        self.port = config["server"]["port"]
        self.config_path = workdir / f"gateway-{self.port}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        super().__init__(
            [sys.executable, "-m", "gateway_app", "serve", "--config", str(self.config_path)],
            workdir / f"gateway-{self.port}.log",
            env=env,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        if wait:
            wait_http(self.url + "/readyz", proc=self.proc)


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway_app", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=timeout,
    )


class BackgroundStream:
    """One streaming chat request read to its end on a thread, for tests that stop the server
    (SIGTERM, `docker stop`) while the stream is in flight."""

    def __init__(self, url: str, key: str, model: str = "slow", timeout: float = 30.0):
        self._request = {
            "url": url + "/v1/chat/completions",
            "headers": {"Authorization": f"Bearer {key}"},
            "json": {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]},
            "timeout": timeout,
        }
        self.chunks: list[bytes] = []
        self.first_chunk = threading.Event()
        self._reader = threading.Thread(target=self._consume)
        self._reader.start()

    def _consume(self) -> None:
        with httpx.stream("POST", **self._request) as response:
            for chunk in response.iter_bytes():
                self.chunks.append(chunk)
                self.first_chunk.set()

    def body(self, timeout: float = 30.0) -> bytes:
        """Everything received once the stream ended (or `timeout` passed)."""
        self._reader.join(timeout)
        return b"".join(self.chunks)


class RedisNode(Process):
    """A redis-server of the test's own on a free port (or ``port``: a restart), no persistence."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server)"
        super().__init__(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            workdir / f"redis-{self.port}.log",
        )  # fmt: skip
        self.name = f"127.0.0.1:{self.port}"
        self.client = redis.Redis(port=self.port, socket_timeout=2)
        wait_until(self._answers)

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def role(self) -> str:
        return self.client.info("replication")["role"]
