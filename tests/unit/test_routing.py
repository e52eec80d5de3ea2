"""Routing decisions without I/O: priority groups, weights, disabled routes and providers."""

from __future__ import annotations

from collections import Counter
from typing import Any

from gateway_app.config import parse_settings
from gateway_app.providers import build_provider
from gateway_app.routing import Router
from tests.conftest import BASE_ENV, base_config


def _router(routes: list[dict[str, Any]], providers: list[dict[str, Any]] | None = None) -> Router:
    config = base_config("sqlite:///unused.db")
    config["providers"] = providers or [{"name": n, "type": "echo"} for n in ("a", "b", "c")]
    config["models"] = [{"name": "m", "routes": routes}]
    settings = parse_settings(config, environ=BASE_ENV)
    return Router(settings, {p.name: build_provider(p) for p in settings.providers})


def _plan(router: Router) -> list[str]:
    return [r.provider_name for r in router.plan(router.models["m"])]


def test_lower_priority_first_whatever_the_config_order() -> None:
    router = _router(
        [
            {"provider": "c", "upstream_model": "x", "priority": 2},
            {"provider": "a", "upstream_model": "x", "priority": 0},
            {"provider": "b", "upstream_model": "x", "priority": 1},
        ]
    )
    assert _plan(router) == ["a", "b", "c"]


def test_weights_split_first_choices_within_a_group() -> None:
    router = _router(
        [
            {"provider": "a", "upstream_model": "x", "weight": 3},
            {"provider": "b", "upstream_model": "x", "weight": 1},
            {"provider": "c", "upstream_model": "x", "priority": 1},
        ]
    )
    plans = [_plan(router) for _ in range(4000)]
    firsts = Counter(plan[0] for plan in plans)
    # Expected 3000/1000; bounds far outside sampling noise (sd ~27).
    assert 2700 < firsts["a"] < 3300 and firsts["a"] + firsts["b"] == 4000
    # Within the group a failure falls through to the other member before the next priority.
    assert all(sorted(plan[:2]) == ["a", "b"] and plan[2] == "c" for plan in plans)


def test_disabled_weight_zero_and_disabled_provider_leave_the_plan() -> None:
    router = _router(
        [
            {"provider": "a", "upstream_model": "x", "enabled": False},
            {"provider": "b", "upstream_model": "x", "weight": 0},
            {"provider": "c", "upstream_model": "x", "priority": 1},
            {"provider": "d", "upstream_model": "x", "priority": 2},
        ],
        providers=[{"name": n, "type": "echo"} for n in ("a", "b", "c")]
        + [{"name": "d", "type": "echo", "enabled": False}],
    )
    assert _plan(router) == ["c"]


def test_admin_overrides_beat_config_both_ways() -> None:
    router = _router(
        [
            {"provider": "a", "upstream_model": "x", "enabled": False},
            {"provider": "b", "upstream_model": "x", "priority": 1},
        ]
    )
    route_a, route_b = router.models["m"].routes
    route_a.admin_enabled = True
    route_b.provider_admin_enabled = False
    assert _plan(router) == ["a"]
    assert route_a.key == "m/a/x" and router.routes_by_key["m/b/x"] is route_b
