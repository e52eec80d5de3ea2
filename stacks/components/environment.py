"""One gateway environment: namespace, database, secrets, gateway, HA, network and observability."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from stacks.components.availability import HighAvailability, HighAvailabilityArgs
from stacks.components.database import Database, DatabaseArgs
from stacks.components.gateway import Gateway, GatewayArgs
from stacks.components.network import GatewayNetwork, GatewayNetworkArgs
from stacks.components.observability import Observability, ObservabilityArgs
from stacks.components.secrets import GatewaySecrets, GatewaySecretsArgs
from stacks.k8s import labels
from stacks.settings import StackSettings, SuppliedSecrets


@dataclass(frozen=True)
class GatewayEnvironmentArgs:
    settings: StackSettings
    supplied: SuppliedSecrets
    stack: str


class GatewayEnvironment(pulumi.ComponentResource):
    namespace: str
    service_name: str
    deployment_name: str

    def __init__(self, name: str, args: GatewayEnvironmentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-gateway:stack:GatewayEnvironment", name, None, opts)
        settings = args.settings
        self.namespace = settings.namespace
        child = pulumi.ResourceOptions(parent=self)
        namespace = k8s.core.v1.Namespace(
            "namespace",
            metadata={
                "name": settings.namespace,
                "labels": {
                    **labels("namespace"),
                    # Admission refuses any pod that is not non-root, capability-free and seccomp-confined.
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
            opts=child,
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        database = Database(
            "database",
            DatabaseArgs(
                settings=settings.database,
                namespace=settings.namespace,
                stack=args.stack,
                production=settings.production,
                backup_retention_days=settings.backup_retention_days,
                external_url=args.supplied.database_url,
            ),
            opts=in_namespace,
        )
        secrets = GatewaySecrets(
            "secrets",
            GatewaySecretsArgs(
                settings=settings.secrets,
                app=settings.gateway,
                namespace=settings.namespace,
                stack=args.stack,
                database_url=database.url,
                supplied=args.supplied,
            ),
            opts=in_namespace,
        )
        availability = HighAvailability(
            "availability",
            HighAvailabilityArgs(
                scheduling=settings.scheduling, namespace=settings.namespace, deployment_name="llm-gateway"
            ),
            opts=in_namespace,
        )
        GatewayNetwork("network", GatewayNetworkArgs(settings=settings), opts=in_namespace)
        gateway = Gateway(
            "gateway",
            GatewayArgs(
                settings=settings,
                secret_name=secrets.secret_name,
                prerequisites=[*secrets.ready, database, availability],
            ),
            opts=in_namespace,
        )
        Observability(
            "observability",
            ObservabilityArgs(
                settings=settings.observability,
                namespace=settings.namespace,
                alert_rules_file=settings.observability.alert_rules_path,
            ),
            opts=in_namespace,
        )
        self.service_name = gateway.service_name
        self.deployment_name = gateway.deployment_name
        self.register_outputs({"namespace": self.namespace, "serviceName": self.service_name})
