"""CrossGuard invariants as plain functions over engine-shaped resource properties.

Self-contained on purpose (PyYAML only): the policy pack runs from this directory alone, and
the tests apply the same functions to the resources captured from the program under mocks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}
SECRET_REF = re.compile(r"^(env|file)\.\S+$")
# Shapes of secret values that must never sit in a ConfigMap.
SECRET_SHAPES = {
    "URL with a password": re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^@\s/]+@"),
    "gateway key": re.compile(r"gwk_[a-z0-9]{12}\.[A-Za-z0-9]{40}"),
    "API key": re.compile(r"\b(sk|sk-proj|AKIA)[-_A-Za-z0-9]{16,}"),
}
SECRET_FIELDS = {"password", "secret", "api_key", "url", "redis_url", "credentials_file"}


@dataclass(frozen=True)
class Resource:
    type: str
    name: str
    props: dict[str, Any]
    urn: str = ""
    depends_on: frozenset[str] = field(default_factory=frozenset)

    @property
    def kind(self) -> str | None:
        return self.props.get("kind") if self.type.startswith("kubernetes:") else None


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    validate: Callable[..., list[str]]


def _pod_spec(resource: Resource) -> dict[str, Any] | None:
    if resource.kind not in WORKLOAD_KINDS:
        return None
    return ((resource.props.get("spec") or {}).get("template") or {}).get("spec") or {}


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers") or []
    yield from pod.get("containers") or []


def _http_path(probe: dict[str, Any] | None) -> str | None:
    return ((probe or {}).get("httpGet") or {}).get("path")


# --- resource checks --------------------------------------------------------------------


def check_probes(resource: Resource) -> list[str]:
    if resource.kind != "Deployment":
        return []
    problems = []
    for container in _containers(_pod_spec(resource)):
        if _http_path(container.get("livenessProbe")) != "/healthz":
            problems.append(f"container {container.get('name')}: livenessProbe must GET /healthz")
        if _http_path(container.get("readinessProbe")) != "/readyz":
            problems.append(f"container {container.get('name')}: readinessProbe must GET /readyz")
    return problems


def check_pod_security(resource: Resource) -> list[str]:
    pod = _pod_spec(resource)
    if pod is None:
        return []
    problems = []
    pod_context = pod.get("securityContext") or {}
    if pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken must be false: no pod here calls the Kubernetes API")
    for container in _containers(pod):
        context, name = container.get("securityContext") or {}, container.get("name")
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            problems.append(f"container {name}: runAsNonRoot must be true")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"container {name}: readOnlyRootFilesystem must be true")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((context.get("capabilities") or {}).get("drop") or []):
            problems.append(f"container {name}: capabilities must drop ALL")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"container {name}: seccompProfile must be RuntimeDefault")
        if not ((container.get("resources") or {}).get("limits") or {}).get("memory"):
            problems.append(f"container {name}: a memory limit is required")
    return problems


def check_image_pinned(resource: Resource) -> list[str]:
    pod = _pod_spec(resource)
    if pod is None:
        return []
    problems = []
    for container in _containers(pod):
        image = container.get("image") or ""
        if "@sha256:" in image:
            continue
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else None
        if tag in (None, "latest"):
            problems.append(
                f"container {container.get('name')}: image {image} must be pinned by tag or digest"
            )
    return problems


def check_rollout(resource: Resource) -> list[str]:
    if resource.kind != "Deployment":
        return []
    spec = resource.props.get("spec") or {}
    pod = _pod_spec(resource)
    problems = []
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    if rolling.get("maxUnavailable") not in (0, "0%"):
        problems.append(
            "strategy.rollingUpdate.maxUnavailable must be 0: capacity never drops during a rollout"
        )
    if "checksum/config" not in (
        ((spec.get("template") or {}).get("metadata") or {}).get("annotations") or {}
    ):
        problems.append("the pod template needs a checksum/config annotation so config changes roll the pods")
    grace = pod.get("terminationGracePeriodSeconds")
    for container in _containers(pod):
        pre_stop = (container.get("lifecycle") or {}).get("preStop")
        if not pre_stop:
            problems.append(
                f"container {container.get('name')}: a preStop hook must let endpoints drop the pod"
            )
        elif grace is None or grace <= ((pre_stop.get("sleep") or {}).get("seconds") or 0):
            problems.append(
                "terminationGracePeriodSeconds must exceed the preStop sleep to leave time to drain"
            )
    return problems


def check_disruption_budget(resource: Resource) -> list[str]:
    if resource.kind != "PodDisruptionBudget":
        return []
    spec = resource.props.get("spec") or {}
    if spec.get("maxUnavailable") in (0, "0%") or spec.get("minAvailable") == "100%":
        return ["the PodDisruptionBudget blocks every eviction: node drains would hang"]
    return []


def check_service_internal(resource: Resource) -> list[str]:
    if resource.kind != "Service":
        return []
    service_type = (resource.props.get("spec") or {}).get("type", "ClusterIP")
    if service_type in ("LoadBalancer", "NodePort"):
        return [f"Service type {service_type} bypasses the ingress and its NetworkPolicy; use ClusterIP"]
    return []


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")
    else:
        yield path, node


def check_configmap_secrets(resource: Resource) -> list[str]:
    if resource.kind != "ConfigMap":
        return []
    problems = []
    for key, text in sorted((resource.props.get("data") or {}).items()):
        if not isinstance(text, str):
            continue
        for shape, pattern in SECRET_SHAPES.items():
            if pattern.search(text):
                problems.append(f"data.{key} contains a {shape}: secrets belong in a Secret")
        if not key.endswith((".yaml", ".yml")):
            continue
        for path, value in _walk(yaml.safe_load(text)):
            field_name = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1])
            if field_name in SECRET_FIELDS and isinstance(value, str) and not SECRET_REF.match(value):
                problems.append(f"data.{key}: {path} must be an env.NAME or file.PATH reference")
    return problems


def check_rds(resource: Resource) -> list[str]:
    if resource.type != "aws:rds/instance:Instance":
        return []
    props = resource.props
    problems = []
    if props.get("storageEncrypted") is not True:
        problems.append("storageEncrypted must be true")
    if props.get("publiclyAccessible"):
        problems.append("publiclyAccessible must be false")
    if props.get("skipFinalSnapshot") is not False or not props.get("finalSnapshotIdentifier"):
        problems.append(
            "a final snapshot must be taken (skipFinalSnapshot false, finalSnapshotIdentifier set)"
        )
    if (props.get("tags") or {}).get("production") == "true":
        if props.get("multiAz") is not True:
            problems.append("production databases are Multi-AZ")
        if props.get("deletionProtection") is not True:
            problems.append("production databases have deletion protection")
        if (props.get("backupRetentionPeriod") or 0) < 7:
            problems.append("production databases keep at least 7 days of backups")
    return problems


RESOURCE_CHECKS = [
    Check("gateway-probes", "Deployments probe /healthz (liveness) and /readyz (readiness)", check_probes),
    Check(
        "pod-security",
        "non-root, read-only, capability-free, seccomp-confined pods without API tokens",
        check_pod_security,
    ),
    Check("image-pinned", "images are pinned by a tag other than latest, or by digest", check_image_pinned),
    Check(
        "safe-rollout",
        "rollouts keep capacity, drain in-flight requests and follow config changes",
        check_rollout,
    ),
    Check("pdb-allows-eviction", "PodDisruptionBudgets never block every eviction", check_disruption_budget),
    Check(
        "service-internal",
        "Services stay ClusterIP; traffic enters through the ingress",
        check_service_internal,
    ),
    Check(
        "no-secrets-in-configmaps",
        "ConfigMaps hold secret references only, never values",
        check_configmap_secrets,
    ),
    Check(
        "rds-settings",
        "RDS is encrypted, private, snapshotted; Multi-AZ and protected in production",
        check_rds,
    ),
]


# --- stack checks -----------------------------------------------------------------------


def _is_migration_job(resource: Resource) -> bool:
    pod = _pod_spec(resource)
    return resource.kind == "Job" and any((c.get("args") or [])[:1] == ["migrate"] for c in _containers(pod))


def check_migration_order(resources: list[Resource]) -> list[str]:
    migrations = {r.urn for r in resources if _is_migration_job(r)}
    problems = []
    for deployment in (r for r in resources if r.kind == "Deployment"):
        if not migrations:
            problems.append(f"Deployment {deployment.name}: no migration Job runs before it")
        elif not migrations & deployment.depends_on:
            problems.append(f"Deployment {deployment.name} must depend on the migration Job")
    return problems


def _min_replicas(deployment: Resource, resources: list[Resource]) -> int:
    name = (deployment.props.get("metadata") or {}).get("name")
    for hpa in (r for r in resources if r.kind == "HorizontalPodAutoscaler"):
        spec = hpa.props.get("spec") or {}
        if (spec.get("scaleTargetRef") or {}).get("name") == name:
            return spec.get("minReplicas") or 1
    return (deployment.props.get("spec") or {}).get("replicas") or 1


def check_budget_fits_replicas(resources: list[Resource]) -> list[str]:
    problems = []
    budgets = [r for r in resources if r.kind == "PodDisruptionBudget"]
    for deployment in (r for r in resources if r.kind == "Deployment"):
        replicas = _min_replicas(deployment, resources)
        labels = (((deployment.props.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        for budget in budgets:
            spec = budget.props.get("spec") or {}
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            if replicas < 2:
                problems.append(
                    f"PodDisruptionBudget {budget.name} guards a single replica: it only blocks drains"
                )
            min_available = spec.get("minAvailable")
            if isinstance(min_available, int) and min_available >= replicas:
                problems.append(
                    f"PodDisruptionBudget {budget.name}: minAvailable {min_available} blocks every "
                    f"eviction of {replicas} replicas"
                )
            max_unavailable = spec.get("maxUnavailable")
            if isinstance(max_unavailable, int) and max_unavailable >= replicas >= 2:
                problems.append(
                    f"PodDisruptionBudget {budget.name}: maxUnavailable {max_unavailable} lets all "
                    f"{replicas} replicas go at once"
                )
    return problems


STACK_CHECKS = [
    Check("migration-before-rollout", "the Deployment waits for the migration Job", check_migration_order),
    Check(
        "pdb-fits-replicas",
        "budgets allow evictions and still protect the minimum replica count",
        check_budget_fits_replicas,
    ),
]
