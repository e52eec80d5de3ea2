"""Cost is always accounted: a stream cut before its usage arrives is estimated, never free."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.conftest import SEED_KEY, base_config
from tests.faults.harness import gateway_config
from tests.support import sql


def test_sigterm_at_the_grace_period_records_an_estimated_cost(db_url, launcher, fault_upstream) -> None:
    # A long stream (200 events, 50 ms apart = 10 s) and a 1 s grace period: SIGTERM cuts it.
    fault_upstream.control(mode="ok", stream_chunks=200, chunk_interval=0.05)
    config = gateway_config(base_config(db_url), fault_upstream.url)
    config["models"][0]["routes"][0].update(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)
    config["server"]["shutdown_grace_seconds"] = 1
    gateway = launcher.gateway(config)
    received: list[bytes] = []

    def stream() -> None:
        body = {"model": "fault-1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        headers = {"Authorization": f"Bearer {SEED_KEY}"}
        try:
            with httpx.stream(
                "POST", gateway.url + "/v1/chat/completions", json=body, headers=headers, timeout=30
            ) as r:
                for chunk in r.iter_raw():
                    received.append(chunk)
        except httpx.HTTPError:
            pass  # the gateway cut it: that is the point

    client = threading.Thread(target=stream, daemon=True)
    client.start()
    deadline = time.monotonic() + 10
    while sum(chunk.count(b"data: ") for chunk in received) < 10:  # some of the stream relayed
        assert time.monotonic() < deadline, "the stream did not start"
        time.sleep(0.05)
    gateway.proc.send_signal(signal.SIGTERM)
    assert gateway.proc.wait(30) == 0
    client.join(10)
    relayed = b"".join(received)
    assert b'"usage":{' not in relayed and b"[DONE]" not in relayed  # cut before its end and usage
    rows = sql.fetch(
        db_url,
        "SELECT prompt_tokens, completion_tokens, cost_micros, estimated, pricing_status "
        "FROM usage_cost_events",
    )
    assert len(rows) == 1, rows
    row = rows[0]
    # Estimated: about one token per relayed event (at least the 10 seen), priced at the route's price.
    assert row["estimated"] and row["pricing_status"] == "priced", row
    assert row["completion_tokens"] >= 10 and row["cost_micros"] >= 20, row
