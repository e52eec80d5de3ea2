"""The CrossGuard validators, called directly: each one refuses what it exists to refuse."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stacks.offline import OfflineRun
from stacks.policy.validators import (
    Resource,
    check_budget_fits_replicas,
    check_configmap_secrets,
    check_disruption_budget,
    check_image_pinned,
    check_migration_order,
    check_pod_security,
    check_probes,
    check_rds,
    check_rollout,
    check_service_internal,
)


def resource_of(run: OfflineRun, type_suffix: str, name: str | None = None) -> Resource:
    captured = run.one(type_suffix, name)
    return Resource(
        captured.type,
        captured.name,
        copy.deepcopy(captured.values),
        captured.urn,
        frozenset(captured.dependencies),
    )


def container(resource: Resource) -> dict[str, Any]:
    return resource.props["spec"]["template"]["spec"]["containers"][0]


def test_probes(runs: dict[str, OfflineRun]) -> None:
    deployment = resource_of(runs["prod"], "Deployment")
    container(deployment)["readinessProbe"]["httpGet"]["path"] = "/healthz"
    del container(deployment)["livenessProbe"]
    assert check_probes(deployment) == [
        "container gateway: livenessProbe must GET /healthz",
        "container gateway: readinessProbe must GET /readyz",
    ]


def test_pod_security(runs: dict[str, OfflineRun]) -> None:
    job = resource_of(runs["local"], "Job", "llm-gateway-gateway-migrate-job")
    job.props["spec"]["template"]["spec"]["automountServiceAccountToken"] = True
    context = container(job)["securityContext"]
    context |= {"readOnlyRootFilesystem": False, "allowPrivilegeEscalation": True, "capabilities": {}}
    assert len(check_pod_security(job)) == 4


def test_image_pinned(runs: dict[str, OfflineRun]) -> None:
    deployment = resource_of(runs["local"], "Deployment")
    assert check_image_pinned(deployment) == []
    container(deployment)["image"] = "ghcr.io/example/llm-gateway:latest"
    assert check_image_pinned(deployment)
    container(deployment)["image"] = "registry.local:5000/llm-gateway"
    assert check_image_pinned(deployment)


def test_rollout(runs: dict[str, OfflineRun]) -> None:
    deployment = resource_of(runs["prod"], "Deployment")
    deployment.props["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 1
    del deployment.props["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    deployment.props["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 5
    assert len(check_rollout(deployment)) == 3


def test_disruption_budget(runs: dict[str, OfflineRun]) -> None:
    budget = resource_of(runs["prod"], "PodDisruptionBudget")
    budget.props["spec"]["maxUnavailable"] = 0
    assert check_disruption_budget(budget) == [
        "the PodDisruptionBudget blocks every eviction: node drains would hang"
    ]


def test_budget_against_replicas(runs: dict[str, OfflineRun]) -> None:
    resources = [
        resource_of(runs["prod"], t) for t in ("Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget")
    ]
    assert check_budget_fits_replicas(resources) == []
    resources[2].props["spec"] = {**resources[2].props["spec"], "maxUnavailable": None, "minAvailable": 3}
    assert check_budget_fits_replicas(resources) == [
        "PodDisruptionBudget llm-gateway-availability-pdb: minAvailable 3 blocks every eviction of 3 replicas"
    ]


def test_service_internal(runs: dict[str, OfflineRun]) -> None:
    service = resource_of(runs["prod"], "Service", "llm-gateway-gateway-service")
    service.props["spec"]["type"] = "LoadBalancer"
    assert check_service_internal(service)


@pytest.mark.parametrize(
    "leak",
    [
        "url: postgresql://gateway:hunter2@db:5432/gateway",
        "password: hunter2",
        "secret: gwk_abcdefghij12.ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn",
    ],
)
def test_configmap_secrets(runs: dict[str, OfflineRun], leak: str) -> None:
    configmap = resource_of(runs["local"], "ConfigMap")
    assert check_configmap_secrets(configmap) == []
    configmap.props["data"]["config.yaml"] += f"extra:\n  {leak}\n"
    assert check_configmap_secrets(configmap)


def test_rds(runs: dict[str, OfflineRun]) -> None:
    rds = resource_of(runs["prod"], "rds/instance:Instance")
    assert check_rds(rds) == []
    rds.props.update(
        {
            "multiAz": False,
            "deletionProtection": False,
            "backupRetentionPeriod": 1,
            "skipFinalSnapshot": True,
            "storageEncrypted": False,
            "publiclyAccessible": True,
        }
    )
    assert len(check_rds(rds)) == 6


def test_migration_order(runs: dict[str, OfflineRun]) -> None:
    deployment = resource_of(runs["prod"], "Deployment")
    migrate = resource_of(runs["prod"], "Job", "llm-gateway-gateway-migrate-job")
    assert check_migration_order([deployment, migrate]) == []
    detached = Resource(deployment.type, deployment.name, deployment.props, deployment.urn, frozenset())
    assert check_migration_order([detached, migrate]) == [
        "Deployment llm-gateway-gateway-deployment must depend on the migration Job"
    ]
    assert check_migration_order([deployment]) == [
        "Deployment llm-gateway-gateway-deployment: no migration Job runs before it"
    ]
