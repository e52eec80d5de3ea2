"""The Pulumi program: validate the stack's settings, then declare the environment."""

from __future__ import annotations

from typing import Any

import pulumi

from stacks.components.environment import GatewayEnvironment, GatewayEnvironmentArgs
from stacks.components.gateway import CONFIG_MAP_KEY, CONFIG_MAP_NAME, GATEWAY_CONTAINER, SERVICE_PORT
from stacks.components.secrets import SECRET_NAME
from stacks.gateway_config import (
    BOOTSTRAP_ADMIN_PASSWORD_ENV,
    CONFIG_PATH,
    DATABASE_URL_ENV,
    SEED_KEY_ENV,
    config_checksum,
)
from stacks.k8s import selector
from stacks.settings import (
    MAX_REPLICAS_PATH,
    MIN_REPLICAS_PATH,
    PROJECT,
    REPLICAS_PATH,
    StackSettings,
    load_settings,
)


def runbook_target(settings: StackSettings, environment: GatewayEnvironment) -> dict[str, Any]:
    """Every name the runbooks' kubernetes target uses, read with `pulumi stack output --json`."""
    return {
        "namespace": environment.namespace,
        "deployment": environment.deployment_name,
        "container": GATEWAY_CONTAINER,
        "podSelector": ",".join(f"{key}={value}" for key, value in sorted(selector("server").items())),
        "secret": SECRET_NAME,
        "configMap": CONFIG_MAP_NAME,
        "configMapKey": CONFIG_MAP_KEY,
        "configPath": CONFIG_PATH,
        "service": environment.service_name,
        "servicePort": SERVICE_PORT,
        "imageRepository": settings.image,
        "imageTagConfigKey": f"{PROJECT}:imageTag",
        # Where `pulumi config set --secret` puts each runtime secret the runbooks rotate.
        "secretConfigKeys": {
            SEED_KEY_ENV: f"{PROJECT}:seedKey",
            BOOTSTRAP_ADMIN_PASSWORD_ENV: f"{PROJECT}:bootstrapAdminPassword",
            DATABASE_URL_ENV: f"{PROJECT}:databaseUrl",
        },
        # Provider keys are fields of one object: --path '<key>.<ENV_NAME>'.
        "providerKeysConfigKey": f"{PROJECT}:providerApiKeys",
        # scale.yml: with an HPA it sets the HPA's bounds (the HPA owns the replica count),
        # without one the fixed count; `pulumi config set --path <key> N`, then `pulumi up`.
        "scaling": {
            "autoscaled": settings.scheduling.autoscaling is not None,
            "minReplicas": settings.scheduling.min_replicas,
            "maxReplicas": settings.scheduling.max_replicas,
            "replicasConfigKey": f"{PROJECT}:{REPLICAS_PATH}",
            "minReplicasConfigKey": f"{PROJECT}:{MIN_REPLICAS_PATH}",
            "maxReplicasConfigKey": f"{PROJECT}:{MAX_REPLICAS_PATH}",
        },
    }


def main() -> None:
    settings, supplied = load_settings()
    environment = GatewayEnvironment(
        "llm-gateway", GatewayEnvironmentArgs(settings=settings, supplied=supplied, stack=pulumi.get_stack())
    )
    # Plain facts only: every secret stays inside the Secret / Secrets Manager.
    pulumi.export("namespace", environment.namespace)
    pulumi.export("service", f"{environment.service_name}.{environment.namespace}.svc.cluster.local")
    pulumi.export("image", settings.image_ref)
    pulumi.export("databaseKind", settings.database.kind)
    pulumi.export("configChecksum", config_checksum(settings.gateway))
    pulumi.export("runbookTarget", runbook_target(settings, environment))
