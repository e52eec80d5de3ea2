"""The Pulumi program: validate the stack's settings, then declare the environment."""

from __future__ import annotations

from typing import Any

import pulumi

from stacks.components.environment import GatewayEnvironment, GatewayEnvironmentArgs
from stacks.components.gateway import CONFIG_MAP_KEY, CONFIG_MAP_NAME, GATEWAY_CONTAINER, SERVICE_PORT
from stacks.gateway_config import (
    BOOTSTRAP_ADMIN_PASSWORD_ENV,
    CONFIG_PATH,
    DATABASE_URL_ENV,
    SEED_KEY_ENV,
)
from stacks.k8s import selector
from stacks.settings import (
    MAX_REPLICAS_PATH,
    MIN_REPLICAS_PATH,
    PROJECT,
    REPLICAS_PATH,
    StackSettings,
    SuppliedSecrets,
    load_settings,
)


def runbook_target(settings: StackSettings, environment: GatewayEnvironment) -> dict[str, Any]:
    """Every name the runbooks' kubernetes target uses, read with `pulumi stack output --json`."""
    return {
        "namespace": environment.namespace,
        "deployment": environment.deployment_name,
        "container": GATEWAY_CONTAINER,
        "podSelector": ",".join(f"{key}={value}" for key, value in sorted(selector("server").items())),
        "secret": environment.secret_name,
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


def environment_args(
    settings: StackSettings, supplied: SuppliedSecrets, stack: str
) -> GatewayEnvironmentArgs:
    """The stack's settings as the component's narrow args (and the stack's own file reads)."""
    rules_file = settings.observability.alert_rules_path
    return GatewayEnvironmentArgs(
        namespace=settings.namespace,
        image=settings.image_ref,
        app=settings.gateway,
        database=settings.database,
        scheduling=settings.scheduling,
        secrets=settings.secrets,
        ingress=settings.ingress,
        observability=settings.observability,
        jobs=settings.jobs,
        supplied=supplied,
        production=settings.production,
        backup_retention_days=settings.backup_retention_days,
        service_account_annotations=(
            {"eks.amazonaws.com/role-arn": settings.aws.irsa_role_arn} if settings.aws.irsa_role_arn else {}
        ),
        # The operator's own rules file, if the stack names one; else the gateway package's rules.
        alert_rules=rules_file.read_text() if rules_file and settings.observability.prometheus_rule else None,
        rds_identifier=f"{PROJECT}-{stack}",
        secrets_manager_name=f"{PROJECT}/{stack}/gateway",
        tags={"app": PROJECT, "stack": stack},
    )


# Children were named without their parent's name before components named them after themselves;
# these aliases keep existing stacks' state (a rename would otherwise replace, e.g., the database).
ENVIRONMENT_NAME = PROJECT
_RENAMED_CHILDREN = {
    "secrets": {
        "env": "gateway-env",
        "env-secret": "gateway-env-secret",
        "env-secret-version": "gateway-env-secret-version",
        "env-external-secret": "gateway-env-external-secret",
    },
    "availability": {"hpa": "gateway-hpa", "pdb": "gateway-pdb"},
    "network": {"policy": "gateway-network-policy"},
    "gateway": {
        "config": "gateway-config",
        "service-account": "gateway-service-account",
        "deployment": "gateway-deployment",
        "service": "gateway-service",
        "ingress": "gateway-ingress",
    },
    "observability": {
        "service-monitor": "gateway-service-monitor",
        "prometheus-rule": "gateway-prometheus-rule",
        "grafana-dashboard": "observability-grafana-dashboard",
    },
}


def legacy_name(name: str) -> str | None:
    """The name a resource of the environment had before component-scoped names, if any."""
    if not name.startswith(f"{ENVIRONMENT_NAME}-"):
        return None
    component, _, suffix = name.removeprefix(f"{ENVIRONMENT_NAME}-").partition("-")
    if not suffix:
        return component  # a direct child of the environment: namespace, database, gateway, ...
    return _RENAMED_CHILDREN.get(component, {}).get(suffix, suffix)


def _alias_legacy_names(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
    old = legacy_name(args.name)
    aliases = [pulumi.Alias(name=old)] if old else []
    return pulumi.ResourceTransformationResult(
        args.props, pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(aliases=aliases))
    )


def main() -> None:
    settings, supplied = load_settings()
    stack = pulumi.get_stack()
    pulumi.runtime.register_stack_transformation(_alias_legacy_names)
    environment = GatewayEnvironment(ENVIRONMENT_NAME, environment_args(settings, supplied, stack))
    # Plain facts only: every secret stays inside the Secret / Secrets Manager.
    pulumi.export("namespace", environment.namespace)
    pulumi.export("service", f"{environment.service_name}.{environment.namespace}.svc.cluster.local")
    pulumi.export("image", settings.image_ref)
    pulumi.export("databaseKind", settings.database.kind)
    pulumi.export("configChecksum", environment.config_checksum)
    pulumi.export("runbookTarget", runbook_target(settings, environment))
