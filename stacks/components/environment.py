"""One gateway environment: namespace, database, secrets, gateway, HA, network and observability."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from stacks.components.availability import HighAvailability, HighAvailabilityArgs
from stacks.components.base import Component
from stacks.components.database import Database, DatabaseArgs
from stacks.components.gateway import Gateway, GatewayArgs
from stacks.components.network import GatewayNetwork, GatewayNetworkArgs, upstream_urls
from stacks.components.observability import Observability, ObservabilityArgs
from stacks.components.secrets import GatewaySecrets, GatewaySecretsArgs
from stacks.k8s import APP_NAME, labels
from stacks.settings import (
    DatabaseSettings,
    GatewayAppSettings,
    IngressSettings,
    JobsSettings,
    ObservabilitySettings,
    SchedulingSettings,
    SecretsSettings,
    SuppliedSecrets,
)


@dataclass(frozen=True)
class GatewayEnvironmentArgs:
    """What one environment is made of; the settings types are those of the stack config."""

    namespace: str
    # The image reference: repository:tag or repository@sha256:digest.
    image: str
    app: GatewayAppSettings
    database: DatabaseSettings
    scheduling: SchedulingSettings
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    ingress: IngressSettings = field(default_factory=IngressSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)
    supplied: SuppliedSecrets = field(default_factory=SuppliedSecrets)
    production: bool = False
    backup_retention_days: int = 1
    service_account_annotations: Mapping[str, str] = field(default_factory=dict)
    # A Prometheus rules file's text; None deploys the rules the gateway package ships.
    alert_rules: str | None = None
    # Cloud names, unique per account and region; default: derived from the component's name.
    rds_identifier: str | None = None
    secrets_manager_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: {"app": APP_NAME})


class GatewayEnvironment(Component):
    namespace: str
    service_name: str
    deployment_name: str
    secret_name: str
    config_checksum: str

    def __init__(self, name: str, args: GatewayEnvironmentArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("GatewayEnvironment", name, opts)
        ns = self.namespace = args.namespace
        namespace = k8s.core.v1.Namespace(
            self.child_name("namespace"),
            metadata={
                "name": ns,
                "labels": {
                    **labels("namespace"),
                    # Admission refuses any pod that is not non-root, capability-free and seccomp-confined.
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
            opts=self.child_opts(),
        )
        in_namespace = self.child_opts(depends_on=[namespace])
        database = Database(
            self.child_name("database"),
            DatabaseArgs(
                settings=args.database,
                namespace=ns,
                identifier=args.rds_identifier or name,
                production=args.production,
                backup_retention_days=args.backup_retention_days,
                tags=args.tags,
                external_url=args.supplied.database_url,
            ),
            opts=in_namespace,
        )
        secrets = GatewaySecrets(
            self.child_name("secrets"),
            GatewaySecretsArgs(
                settings=args.secrets,
                namespace=ns,
                database_url=database.url,
                provider_key_envs=tuple(args.app.provider_key_envs),
                bootstrap_admin=bool(args.app.bootstrap_admin_email),
                seed_key=args.app.seed_service_account is not None,
                supplied=args.supplied,
                secrets_manager_name=args.secrets_manager_name,
                tags=args.tags,
            ),
            opts=in_namespace,
        )
        availability = HighAvailability(
            self.child_name("availability"),
            HighAvailabilityArgs(scheduling=args.scheduling, namespace=ns, deployment_name=APP_NAME),
            opts=in_namespace,
        )
        sources = [args.ingress.controller_namespace]
        if args.observability.service_monitor:
            sources.append(args.observability.monitoring_namespace)
        GatewayNetwork(
            self.child_name("network"),
            GatewayNetworkArgs(
                namespace=ns,
                database=args.database,
                upstream_urls=upstream_urls(args.app),
                source_namespaces=tuple(sources),
            ),
            opts=in_namespace,
        )
        gateway = Gateway(
            self.child_name("gateway"),
            GatewayArgs(
                namespace=ns,
                image=args.image,
                app=args.app,
                scheduling=args.scheduling,
                secret_name=secrets.secret_name,
                ingress=args.ingress,
                jobs=args.jobs,
                service_account_annotations=args.service_account_annotations,
                prerequisites=[*secrets.ready, database, availability],
            ),
            opts=in_namespace,
        )
        Observability(
            self.child_name("observability"),
            ObservabilityArgs(settings=args.observability, namespace=ns, alert_rules=args.alert_rules),
            opts=in_namespace,
        )
        self.service_name = gateway.service_name
        self.deployment_name = gateway.deployment_name
        self.secret_name = secrets.secret_name
        self.config_checksum = gateway.config_checksum
        self.register_outputs(
            {
                "namespace": self.namespace,
                "serviceName": self.service_name,
                "deploymentName": self.deployment_name,
                "configChecksum": self.config_checksum,
            }
        )
