"""The bench's pure logic: wrk output parsing, first-chunk timestamps, percentiles, target verdicts.

No load runs here: performance is measured by `make bench`, never asserted in tests.
"""

from __future__ import annotations

import pytest

from bench import BenchError
from bench.first_chunk import first_sent_ns, percentile
from bench.report import CHAT_C1, CHAT_C10, DIRECT, GATEWAY, Results
from bench.wrk import WrkResult, parse

WRK_OUTPUT = """\
Running 5s test @ http://127.0.0.1:40000/v1/chat/completions
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.85ms    2.40ms  67.25ms   96.22%
    Req/Sec     3.73k     0.94k    5.89k    65.45%
  Latency Distribution
     50%  812.00us
     75%    3.16ms
     90%    3.83ms
     99%    1.02s
  18534 requests in 5.01s, 7.78MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   3699.41
Transfer/sec:      1.55MB
"""


def test_wrk_output_is_parsed_with_its_units() -> None:
    assert parse(WRK_OUTPUT) == WrkResult(
        requests=18534, requests_per_s=3699.41, p50_ms=0.812, p99_ms=1020.0, non_2xx=7, socket_errors=5
    )


def test_a_clean_wrk_run_has_no_errors() -> None:
    clean = WRK_OUTPUT.replace("  Socket errors: connect 0, read 2, write 0, timeout 3\n", "").replace(
        "  Non-2xx or 3xx responses: 7\n", ""
    )
    result = parse(clean)
    assert (result.non_2xx, result.socket_errors) == (0, 0)


def test_wrk_output_without_latency_distribution_is_refused() -> None:
    # `wrk` run without --latency prints no percentiles: the bench must not report zeros.
    without = "\n".join(line for line in WRK_OUTPUT.splitlines() if "%  " not in line)
    with pytest.raises(BenchError, match="50%"):
        parse(without)


def test_first_chunk_time_needs_the_whole_first_event() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4a\r\n: sent_ns=123456789\n"
    assert first_sent_ns(head) is None
    assert first_sent_ns(head + b'data: {"choices":[]}') is None
    assert first_sent_ns(head + b'data: {"choices":[]}\n\n\r\n') == 123456789


def test_first_chunk_time_is_the_first_events() -> None:
    stream = b": sent_ns=5\ndata: {}\n\n: sent_ns=9\ndata: {}\n\n"
    assert first_sent_ns(stream) == 5


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def _run(rps: float, p50_ms: float) -> WrkResult:
    return WrkResult(
        requests=1000, requests_per_s=rps, p50_ms=p50_ms, p99_ms=p50_ms * 3, non_2xx=0, socket_errors=0
    )


def test_targets_compare_the_gateway_with_the_direct_run() -> None:
    results = Results(settings={})
    results.wrk[DIRECT] = {CHAT_C10: _run(50_000, 0.1), CHAT_C1: _run(40_000, 0.02)}
    results.wrk[GATEWAY] = {CHAT_C10: _run(2_900, 3.0), CHAT_C1: _run(2_000, 0.52)}
    verdicts = {t["name"]: (t["measured"], t["met"]) for t in results.targets()}
    assert verdicts["gateway req/s at 10 connections"] == (2_900, False)
    added, met = verdicts["added p50 latency at 1 connection, ms"]
    assert added == pytest.approx(0.5) and met is True
    assert verdicts["first chunk out after it arrives, added p50 ms"] == (None, None)
