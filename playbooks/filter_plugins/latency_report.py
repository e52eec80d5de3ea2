"""What provider_latency.yml computes: percentiles from /metrics histograms, and the flags.

``texts | histogram_quantiles('gateway_upstream_endpoint_latency_seconds', ['provider', 'region'])``
sums the cumulative ``_bucket`` counts of every series that share the ``by`` labels, then
estimates each quantile the way PromQL's ``histogram_quantile`` does: linear interpolation
inside the bucket where the rank falls; a rank in the +Inf bucket answers the highest finite
bound. Values are in milliseconds. ``texts`` is one /metrics text, or a mapping
{instance: text}: then one row per instance and group, and the same groups over all instances
(``instance: all``).

``probes | latency_flags(endpoint_rows, provider_rows, threshold_ms)`` lists what is slower than
the threshold (or unreachable): a probe of ``gateway probe-endpoints``, or the p95 of real
traffic over all instances.
"""

from __future__ import annotations

import math
import re
from typing import Any

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _buckets(texts: list[str], metric: str, by: list[str]) -> dict[tuple[str, ...], dict[float, float]]:
    groups: dict[tuple[str, ...], dict[float, float]] = {}
    name = metric + "_bucket"
    for text in texts:
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            match = _SAMPLE.match(line)
            if match is None or match.group("name") != name:
                continue
            labels = dict(_LABEL.findall(match.group("labels") or ""))
            if "le" not in labels:
                continue
            key = tuple(labels.get(label, "") for label in by)
            bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            series = groups.setdefault(key, {})
            series[bound] = series.get(bound, 0.0) + float(match.group("value"))
    return groups


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """histogram_quantile(q) over sorted (upper bound, cumulative count); None without samples."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    total = cumulative[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower  # the highest finite bound: nothing better is known
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _rows(text_list: list[str], metric: str, by: list[str], quantiles: list[float]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, series in sorted(_buckets(text_list, metric, by).items()):
        cumulative = sorted(series.items())
        row: dict[str, Any] = dict(zip(by, key, strict=True))
        row["count"] = int(cumulative[-1][1]) if cumulative else 0
        for q in quantiles:
            value = quantile(q, cumulative)
            row[f"p{round(q * 100):02d}_ms"] = None if value is None else round(value * 1000, 1)
        rows.append(row)
    return rows


def histogram_quantiles(
    texts: str | list[str] | dict[str, str], metric: str, by: list[str], quantiles: list[float] | None = None
) -> list[dict[str, Any]]:
    """One row per label group: the ``by`` labels, ``count`` and ``p<NN>_ms`` for each quantile."""
    chosen = [float(q) for q in quantiles or [0.5, 0.95]]
    if isinstance(texts, str):
        return _rows([texts], metric, list(by), chosen)
    if not isinstance(texts, dict):
        return _rows(list(texts), metric, list(by), chosen)
    rows = [
        {"instance": instance, **row}
        for instance, text in texts.items()
        for row in _rows([text], metric, list(by), chosen)
    ]
    return rows + [
        {"instance": "all", **row} for row in _rows(list(texts.values()), metric, list(by), chosen)
    ]


def latency_flags(
    probes: list[dict[str, Any]],
    endpoint_rows: list[dict[str, Any]],
    provider_rows: list[dict[str, Any]],
    threshold_ms: float,
) -> list[str]:
    """One line per endpoint or provider slower than ``threshold_ms`` (or not answering a probe)."""
    threshold = float(threshold_ms)
    flags: list[str] = []
    for probe in probes:
        name = f"{probe['provider']}/{probe['region']}"
        if not probe["ok"]:
            flags.append(f"{name}: probe failed after {probe['latency_ms']} ms ({probe['error']})")
        elif float(probe["latency_ms"]) > threshold:
            flags.append(f"{name}: probe {probe['latency_ms']} ms > {threshold:g} ms")
    for rows, labels in ((endpoint_rows, ("provider", "region")), (provider_rows, ("provider",))):
        for row in rows:
            p95 = row.get("p95_ms")
            if row.get("instance", "all") == "all" and p95 is not None and p95 > threshold:
                name = "/".join(str(row[label]) for label in labels)
                flags.append(f"{name}: traffic p95 {p95} ms > {threshold:g} ms ({row['count']} attempts)")
    return flags


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"histogram_quantiles": histogram_quantiles, "latency_flags": latency_flags}
