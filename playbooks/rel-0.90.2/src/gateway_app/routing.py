"""Models to routes: which upstream to try, in which order.

Routes of a model are grouped by priority (lower first); within a group the
order is a weighted shuffle, so traffic splits by weight and a failure falls
through to the rest of the group before the next priority. Routes that are
disabled (in config or by an admin override) or whose circuit is open are
left out of the plan without being waited on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from itertools import groupby

from gateway_app.config import GatewaySettings, ModelSettings, RouteSettings
from gateway_app.pricing import Price, lookup
from gateway_app.providers import Provider
from gateway_app.resilience import RouteHealth


@dataclass(slots=True, eq=False)
class Route:
    key: str  # "<model>/<provider>/<upstream_model>": stable across replicas and restarts
    model: str
    provider: Provider
    provider_name: str
    upstream_model: str
    priority: int
    weight: int
    price: Price | None
    settings: RouteSettings
    health: RouteHealth  # this replica's breaker, last error and latency
    # Admin overrides, refreshed in the background.
    admin_enabled: bool | None = None
    provider_admin_enabled: bool | None = None

    def eligible(self, provider_config_enabled: bool) -> bool:
        provider_on = (
            provider_config_enabled if self.provider_admin_enabled is None else self.provider_admin_enabled
        )
        route_on = self.settings.enabled if self.admin_enabled is None else self.admin_enabled
        return provider_on and route_on and self.weight > 0


@dataclass(slots=True)
class ModelEntry:
    name: str
    operations: frozenset[str]
    groups: list[list[Route]] = field(default_factory=list)  # by priority

    @property
    def routes(self) -> list[Route]:
        return [r for group in self.groups for r in group]


def route_key(model: str, route: RouteSettings) -> str:
    return f"{model}/{route.provider}/{route.upstream_model}"


class Router:
    def __init__(self, settings: GatewaySettings, providers: dict[str, Provider]):
        self._provider_enabled = {p.name: p.enabled for p in settings.providers}
        self.models: dict[str, ModelEntry] = {}
        for model in settings.models:
            self.models[model.name] = self._entry(settings, model, providers)
        self.routes_by_key = {r.key: r for m in self.models.values() for r in m.routes}

    def _entry(
        self, settings: GatewaySettings, model: ModelSettings, providers: dict[str, Provider]
    ) -> ModelEntry:
        routes = [
            Route(
                key=route_key(model.name, r),
                model=model.name,
                provider=providers[r.provider],
                provider_name=r.provider,
                upstream_model=r.upstream_model,
                priority=r.priority,
                weight=r.weight,
                price=lookup(settings.provider(r.provider).pricing_provider_id, r.upstream_model, r),
                settings=r,
                health=RouteHealth(route_key(model.name, r), settings.resilience),
            )
            for r in sorted(model.routes, key=lambda r: r.priority)
        ]
        groups = [list(g) for _, g in groupby(routes, key=lambda r: r.priority)]
        return ModelEntry(model.name, frozenset(model.operations), groups)

    def eligible(self, route: Route) -> bool:
        return route.eligible(self._provider_enabled[route.provider_name])

    def plan(self, entry: ModelEntry) -> list[Route]:
        """The routes to try, in order."""
        plan: list[Route] = []
        for group in entry.groups:
            candidates = [r for r in group if self.eligible(r)]
            if len(candidates) > 1:
                candidates = _weighted_shuffle(candidates)
            plan.extend(candidates)
        return plan


def _weighted_shuffle(routes: list[Route]) -> list[Route]:
    # Efraimidis-Spirakis: sort by u^(1/w); equivalent to repeated weighted draws.
    return sorted(routes, key=lambda r: random.random() ** (1.0 / r.weight), reverse=True)
