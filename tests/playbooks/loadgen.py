"""A load generator for rolling restarts: real chat requests through the load balancer."""

from __future__ import annotations

import threading
from collections import Counter

import httpx


def _describe(response: httpx.Response) -> str:
    """'HTTP 503 ledger_backlog' from the gateway's error, or the status and the start of
    another answer's body (haproxy's own 503 is HTML): which part refused is the diagnosis."""
    try:
        detail = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        detail = " ".join(response.text.split())[:60]
    return f"HTTP {response.status_code} {detail}"


class LoadGenerator:
    """`workers` threads, each with a keep-alive client, sending chat requests until stopped.

    Each worker pauses `pause` seconds between requests: steady traffic that leaves
    the CPU to the playbook on a small machine.
    """

    def __init__(self, url: str, key: str, workers: int = 3, pause: float = 0.02):
        self._url = f"{url}/v1/chat/completions"
        self._headers = {"Authorization": f"Bearer {key}"}
        self._pause = pause
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sent = 0
        self.failures: Counter[str] = Counter()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def _work(self) -> None:
        body = {"model": "echo-1", "messages": [{"role": "user", "content": "during the upgrade"}]}
        with httpx.Client(headers=self._headers, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self._url, json=body)
                    failure = None if response.status_code == 200 else _describe(response)
                except httpx.HTTPError as exc:
                    failure = exc.__class__.__name__
                with self._lock:
                    self.sent += 1
                    if failure:
                        self.failures[failure] += 1
                self._stop.wait(self._pause)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def __enter__(self) -> LoadGenerator:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
