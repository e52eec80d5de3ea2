"""Kubernetes building blocks shared by the components: labels, security contexts, annotations."""

from __future__ import annotations

from typing import Any

APP_NAME = "llm-gateway"
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
GATEWAY_UID = 10001
POSTGRES_UID = 10002


def labels(component: str, name: str = APP_NAME) -> dict[str, str]:
    return {
        NAME_LABEL: name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": APP_NAME,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def selector(component: str, name: str = APP_NAME) -> dict[str, str]:
    return {NAME_LABEL: name, COMPONENT_LABEL: component}


def checkov_skips(reasons: dict[str, str]) -> dict[str, str]:
    """Annotations that skip checkov checks; every skip states why it does not apply."""
    return {
        f"checkov.io/skip{i}": f"{check}={reason}"
        for i, (check, reason) in enumerate(sorted(reasons.items()), start=1)
    }


def pod_security_context(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
