"""Bundled pricing catalog and cost computation for the usage ledger.

Prices are USD per million tokens. Costs are kept as integer micro-dollars so
that sums over the ledger are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway_app.config import GatewaySettings, RouteSettings

# pricing_provider_id -> model -> (input, output) USD per million tokens
CATALOG: dict[str, dict[str, tuple[float, float]]] = {
    "openai": {
        "gpt-4o": (2.50, 10.00),
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-4.1-mini": (0.40, 1.60),
        "text-embedding-3-small": (0.02, 0.0),
        "text-embedding-3-large": (0.13, 0.0),
    },
    "anthropic": {
        "claude-3-5-haiku-latest": (0.80, 4.00),
        "claude-sonnet-4-0": (3.00, 15.00),
    },
    "google_vertex": {
        "google/gemini-2.0-flash": (0.10, 0.40),
        "google/gemini-2.5-pro": (1.25, 10.00),
    },
    "mistral": {
        "mistral-small-latest": (0.20, 0.60),
    },
    # Self-hosted models: usage is recorded, cost is zero.
    "self_hosted": {"*": (0.0, 0.0)},
    # The offline echo provider, priced so that budgets can be exercised offline.
    "echo": {"*": (1.0, 2.0)},
}

PRICED, UNPRICED, USAGE_MISSING = "priced", "unpriced", "usage_missing"


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float


def lookup(
    pricing_provider_id: str | None, upstream_model: str, route: RouteSettings | None = None
) -> Price | None:
    if route is not None and route.input_usd_per_mtok is not None:
        return Price(route.input_usd_per_mtok, route.output_usd_per_mtok or 0.0)
    models = CATALOG.get(pricing_provider_id or "")
    if not models:
        return None
    pair = models.get(upstream_model) or models.get("*")
    return Price(*pair) if pair else None


def cost_micros(
    price: Price | None, prompt_tokens: int | None, completion_tokens: int | None
) -> tuple[int, str]:
    """(cost in micro-USD, pricing status) for one request's usage."""
    if prompt_tokens is None and completion_tokens is None:
        return 0, USAGE_MISSING
    if price is None:
        return 0, UNPRICED
    cost = (prompt_tokens or 0) * price.input_per_mtok + (completion_tokens or 0) * price.output_per_mtok
    return round(cost), PRICED  # USD/Mtok * tokens == micro-USD


def unknown_pricing_ids(settings: GatewaySettings) -> list[tuple[int, str]]:
    return [
        (i, p.pricing_provider_id)
        for i, p in enumerate(settings.providers)
        if p.pricing_provider_id is not None and p.pricing_provider_id not in CATALOG
    ]
