"""The fault upstream does what each mode says (so a passing fault test means the gateway held)."""

from __future__ import annotations

import asyncio

from tests.faults.harness import FaultUpstreamProcess, chat_request, drive, drop_after_first_chunk


def test_modes_misbehave_as_documented(fault_upstream: FaultUpstreamProcess) -> None:
    port = fault_upstream.port
    ok = asyncio.run(drive(port, chat_request(port, "k", stream=True), count=3, concurrency=3, timeout=10))
    assert [(r.status, r.error) for r in ok] == [(200, None)] * 3
    assert all(r.body.endswith(b"data: [DONE]\n\n") for r in ok)

    fault_upstream.control(mode="stall_after_head")
    stalled = asyncio.run(drive(port, chat_request(port, "k"), count=2, concurrency=2, timeout=0.5))
    assert [(r.status, r.error) for r in stalled] == [(200, "timeout")] * 2

    fault_upstream.control(mode="huge_body", body_bytes=5_000_000)
    (huge,) = asyncio.run(drive(port, chat_request(port, "k"), count=1, concurrency=1, timeout=10))
    assert huge.error is None and len(huge.body) == 5_000_000

    fault_upstream.control(mode="reset")
    (reset,) = asyncio.run(drive(port, chat_request(port, "k"), count=1, concurrency=1, timeout=10))
    assert reset.error == "ConnectionResetError"

    fault_upstream.control(mode="endless")
    assert asyncio.run(drop_after_first_chunk(port, chat_request(port, "k", stream=True), timeout=5))
    stats = fault_upstream.stats()
    assert stats["streams_finished"] == 3
    assert stats["responses_cut"] >= 3  # two stalls and the endless stream saw their client go
