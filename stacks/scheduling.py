"""Where gateway pods may run: the pod-spec fields derived from the scheduling settings."""

from __future__ import annotations

from typing import Any

from stacks.settings import SchedulingSettings

ZONE_KEY = "topology.kubernetes.io/zone"
HOSTNAME_KEY = "kubernetes.io/hostname"


def node_pool_placement(sched: SchedulingSettings) -> dict[str, Any]:
    """nodeSelector and tolerations for the declared node pool (shared by the server and its Jobs)."""
    pool = sched.pool
    placement: dict[str, Any] = {}
    if pool.labels:
        placement["nodeSelector"] = dict(sorted(pool.labels.items()))
    if pool.taints:
        placement["tolerations"] = [
            {
                "key": t.key,
                "operator": "Equal" if t.value is not None else "Exists",
                **({"value": t.value} if t.value is not None else {}),
                "effect": t.effect,
            }
            for t in pool.taints
        ]
    return placement


def server_placement(sched: SchedulingSettings, pod_selector: dict[str, str]) -> dict[str, Any]:
    """Pool placement plus spread across zones and nodes, anti-affinity and priority."""
    zone_spread: dict[str, Any] = {
        "maxSkew": 1,
        "topologyKey": ZONE_KEY,
        "whenUnsatisfiable": sched.zone_spread,
        "labelSelector": {"matchLabels": pod_selector},
        # Spread each ReplicaSet on its own: old pods leaving mid-rollout must not skew the new ones.
        "matchLabelKeys": ["pod-template-hash"],
    }
    if sched.min_zones is not None:
        zone_spread["minDomains"] = sched.min_zones
    node_spread = {**zone_spread, "topologyKey": HOSTNAME_KEY, "whenUnsatisfiable": sched.node_spread}
    node_spread.pop("minDomains", None)
    term = {"labelSelector": {"matchLabels": pod_selector}, "topologyKey": HOSTNAME_KEY}
    anti_affinity = (
        {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
        if sched.pod_anti_affinity == "required"
        else {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]}
    )
    placement = {
        **node_pool_placement(sched),
        "topologySpreadConstraints": [zone_spread, node_spread],
        "affinity": {"podAntiAffinity": anti_affinity},
    }
    if sched.priority_class:
        placement["priorityClassName"] = sched.priority_class.name
    return placement
