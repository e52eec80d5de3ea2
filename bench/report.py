"""The printed table and .bench/results.json, with the issue's targets next to the measured values."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.concurrent_streams import ConcurrentStreamsResult
from bench.first_chunk import FirstChunkResult
from bench.gateway import GatewayCost
from bench.wrk import WrkResult

DIRECT, GATEWAY, GATEWAY_PG = "direct", "gateway", "gateway_postgres"
CHAT_C10, CHAT_C1, SSE_C10 = "chat_c10", "chat_c1", "sse_c10"


@dataclass
class Results:
    settings: dict[str, Any]
    # target (DIRECT, GATEWAY, GATEWAY_PG) -> scenario (CHAT_C10, ...) -> numbers
    wrk: dict[str, dict[str, WrkResult]] = field(default_factory=dict)
    gateway_costs: dict[str, dict[str, GatewayCost]] = field(default_factory=dict)
    first_chunk: FirstChunkResult | None = None
    concurrent_streams: ConcurrentStreamsResult | None = None

    def value(self, target: str, scenario: str, attribute: str) -> float | None:
        for runs in (self.wrk, self.gateway_costs):
            found = getattr(runs.get(target, {}).get(scenario), attribute, None)
            if found is not None:
                return found
        return None

    def added_p50_c1_ms(self, target: str) -> float | None:
        gateway, direct = self.value(target, CHAT_C1, "p50_ms"), self.value(DIRECT, CHAT_C1, "p50_ms")
        return None if gateway is None or direct is None or target == DIRECT else gateway - direct

    def targets(self) -> list[dict[str, Any]]:
        fc = self.first_chunk
        checks = [
            ("gateway req/s at 10 connections", self.value(GATEWAY, CHAT_C10, "requests_per_s"), ">=", 3000),
            ("added p50 latency at 1 connection, ms", self.added_p50_c1_ms(GATEWAY), "<=", 0.6),
            ("first chunk out after it arrives, added p50 ms", fc and fc.added_relay_p50_ms, "<=", 1.0),
        ]
        cs = self.concurrent_streams
        if cs is not None:
            label = f"{cs.streams} concurrent streams, first chunk p99 ms"
            checks.append((label, cs.gateway_first_chunk_p99_ms, "<=", 600))
        return [
            {
                "name": name,
                "measured": measured,
                "target": f"{op} {limit:g}",
                "met": None if measured is None else (measured >= limit if op == ">=" else measured <= limit),
            }
            for name, measured, op, limit in checks
        ]

    def to_json(self) -> dict[str, Any]:
        def plain(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
            return {t: {s: asdict(r) for s, r in by_scenario.items()} for t, by_scenario in runs.items()}

        return {
            "settings": self.settings,
            "wrk": plain(self.wrk),
            "gateway_costs": plain(self.gateway_costs),
            "added_p50_c1_ms": {t: self.added_p50_c1_ms(t) for t in (GATEWAY, GATEWAY_PG) if t in self.wrk},
            "first_chunk": asdict(self.first_chunk) if self.first_chunk else None,
            "concurrent_streams": asdict(self.concurrent_streams) if self.concurrent_streams else None,
            "targets": self.targets(),
        }


_ROWS = (  # label, scenario, attribute, format
    ("chat, 10 conn: req/s", CHAT_C10, "requests_per_s", "{:.0f}"),
    ("chat, 10 conn: p50 ms", CHAT_C10, "p50_ms", "{:.3f}"),
    ("chat, 10 conn: p99 ms", CHAT_C10, "p99_ms", "{:.3f}"),
    ("chat, 10 conn: CPU us/request", CHAT_C10, "cpu_us_per_request", "{:.0f}"),
    ("chat, 10 conn: request log kept", CHAT_C10, "logged_fraction", "{:.1%}"),
    ("chat, 10 conn: log backlog at end", CHAT_C10, "log_backlog", "{:.0f}"),
    ("chat, 1 conn: p50 ms", CHAT_C1, "p50_ms", "{:.3f}"),
    ("chat, 1 conn: request log kept", CHAT_C1, "logged_fraction", "{:.1%}"),
    ("stream, 10 conn: req/s", SSE_C10, "requests_per_s", "{:.0f}"),
    ("stream, 10 conn: request log kept", SSE_C10, "logged_fraction", "{:.1%}"),
    ("stream, 10 conn: log backlog at end", SSE_C10, "log_backlog", "{:.0f}"),
)


def _cell(value: float | None, template: str) -> str:
    return "-" if value is None else template.format(value)


def table(results: Results) -> str:
    columns = [t for t in (DIRECT, GATEWAY, GATEWAY_PG) if t in results.wrk]
    rows = [
        (label, [_cell(results.value(t, scenario, attribute), fmt) for t in columns])
        for label, scenario, attribute, fmt in _ROWS
    ]
    rows.append(("added p50 at 1 conn, ms", [_cell(results.added_p50_c1_ms(t), "{:.3f}") for t in columns]))
    width = max(len(label) for label, _ in rows) + 2
    lines = [" " * width + "".join(f"{c:>18}" for c in columns)]
    lines += [label.ljust(width) + "".join(f"{v:>18}" for v in values) for label, values in rows]
    fc = results.first_chunk
    if fc is not None:
        lines += [
            "",
            f"first SSE chunk, {fc.requests} streams each way (upstream write -> client read):",
            f"  direct p50 {fc.direct_relay_p50_ms:.3f} ms, via gateway p50 {fc.gateway_relay_p50_ms:.3f} ms;"
            f" added by the gateway p50 {fc.added_relay_p50_ms:.3f} ms, p99 {fc.added_relay_p99_ms:.3f} ms",
            f"  added time to first chunk (request sent -> first chunk): "
            f"p50 {fc.added_ttfc_p50_ms:.3f} ms, p99 {fc.added_ttfc_p99_ms:.3f} ms",
        ]
    cs = results.concurrent_streams
    if cs is not None:
        lines += [
            "",
            f"{cs.streams} concurrent {cs.stream_seconds:g}-second streams (connect -> first chunk):",
            f"  direct p50 {cs.direct_first_chunk_p50_ms:.1f} ms, p99 {cs.direct_first_chunk_p99_ms:.1f} ms;"
            f" via gateway p50 {cs.gateway_first_chunk_p50_ms:.1f} ms,"
            f" p99 {cs.gateway_first_chunk_p99_ms:.1f} ms",
            f"  gateway: {cs.gateway_completed}/{cs.streams} completed,"
            f" peak RSS {cs.gateway_peak_rss_mb:.0f} MB,"
            f" CPU {cs.gateway_cpu_ms_per_stream:.2f} ms per stream",
        ]
    lines += ["", "targets:"]
    for check in results.targets():
        verdict = {True: "met", False: "MISSED", None: "not measured"}[check["met"]]
        measured = _cell(check["measured"], "{:.3f}")
        lines.append(f"  {check['name']:<48} {measured:>10}  (target {check['target']})  {verdict}")
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.to_json(), indent=2) + "\n")
