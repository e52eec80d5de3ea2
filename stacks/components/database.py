"""The gateway's PostgreSQL database: in-cluster, CloudNativePG, AWS RDS or external."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi_aws import ec2, rds

from stacks.components.base import Component
from stacks.k8s import (
    POSTGRES_UID,
    checkov_skips,
    container_security_context,
    labels,
    pod_security_context,
    selector,
)
from stacks.settings import DatabaseSettings

POSTGRES_PORT = 5432
IN_CLUSTER_NAME = "llm-gateway-postgres"
CNPG_CLUSTER_NAME = "llm-gateway-db"


@dataclass(frozen=True)
class DatabaseArgs:
    settings: DatabaseSettings
    namespace: str
    # aws_rds: the instance identifier (unique per account and region) and the tags of its resources.
    identifier: str
    production: bool = False
    backup_retention_days: int = 1
    tags: Mapping[str, str] = field(default_factory=dict)
    # The URL of an external database (secret config); required for kind external only.
    external_url: pulumi.Output[str] | None = None


def postgres_url(
    user: str, password: pulumi.Input[str], host: pulumi.Input[str], port: pulumi.Input[int], database: str
) -> pulumi.Output[str]:
    return pulumi.Output.secret(
        pulumi.Output.format("postgresql://{0}:{1}@{2}:{3}/{4}", user, password, host, port, database)
    )


class Database(Component):
    """Declares the database of the chosen kind; ``url`` is the secret connection URL for the gateway."""

    url: pulumi.Output[str]

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("Database", name, opts)
        self._args = args
        child = self.child_opts()
        builders = {
            "in_cluster": self._in_cluster,
            "cloudnativepg": self._cloudnativepg,
            "aws_rds": self._aws_rds,
            "external": self._external,
        }
        self.url = builders[args.settings.kind](child)
        self.register_outputs({"kind": args.settings.kind, "url": self.url})

    def _password(self, name: str, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        # Alphanumeric: the password sits inside a URL and RDS rejects '/', '@', '"' and spaces.
        password = random.RandomPassword(self.child_name(name), length=32, special=False, opts=opts)
        return pulumi.Output.secret(password.result)

    def _in_cluster(self, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        settings, ns = self._args.settings, self._args.namespace
        pg = settings.in_cluster
        password = self._password("postgres-password", opts)
        credentials = k8s.core.v1.Secret(
            self.child_name("postgres-credentials"),
            metadata={
                "name": IN_CLUSTER_NAME,
                "namespace": ns,
                "labels": labels("database", IN_CLUSTER_NAME),
            },
            type="Opaque",
            string_data={
                "POSTGRES_USER": settings.user,
                "POSTGRES_DB": settings.name,
                "POSTGRES_PASSWORD": password,
            },
            opts=opts,
        )
        pod_labels = selector("database", IN_CLUSTER_NAME)
        service = k8s.core.v1.Service(
            self.child_name("postgres-service"),
            metadata={
                "name": IN_CLUSTER_NAME,
                "namespace": ns,
                "labels": labels("database", IN_CLUSTER_NAME),
            },
            # Headless: the StatefulSet's governing service; one replica, so the name is the primary.
            spec={
                "clusterIP": "None",
                "selector": pod_labels,
                "ports": [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres"}],
            },
            opts=opts,
        )
        ready_check = {
            "exec": {"command": ["pg_isready", "-U", settings.user, "-d", settings.name, "-h", "127.0.0.1"]}
        }
        claim: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": pg.storage_size}},
        }
        if pg.storage_class:
            claim["storageClassName"] = pg.storage_class
        k8s.apps.v1.StatefulSet(
            self.child_name("postgres"),
            metadata={
                "name": IN_CLUSTER_NAME,
                "namespace": ns,
                "labels": labels("database", IN_CLUSTER_NAME),
                "annotations": checkov_skips(
                    {
                        "CKV_K8S_43": "the official postgres image is pinned by minor version tag",
                        "CKV_K8S_35": "the postgres image reads POSTGRES_PASSWORD only from env",
                    }
                ),
            },
            spec={
                "serviceName": IN_CLUSTER_NAME,
                "replicas": 1,
                "selector": {"matchLabels": pod_labels},
                "template": {
                    "metadata": {"labels": labels("database", IN_CLUSTER_NAME)},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": pod_security_context(POSTGRES_UID),
                        "containers": [
                            {
                                "name": "postgres",
                                "image": pg.image,
                                "imagePullPolicy": "Always",
                                "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT}],
                                "envFrom": [{"secretRef": {"name": IN_CLUSTER_NAME}}],
                                # initdb needs an empty directory it owns, not the volume root.
                                "env": [{"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
                                "resources": {
                                    "requests": {"cpu": pg.cpu, "memory": pg.memory},
                                    "limits": {"cpu": pg.cpu, "memory": pg.memory},
                                },
                                "livenessProbe": {**ready_check, "periodSeconds": 10, "failureThreshold": 6},
                                "readinessProbe": {**ready_check, "periodSeconds": 5},
                                "securityContext": container_security_context(POSTGRES_UID),
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/var/lib/postgresql/data"},
                                    {"name": "run", "mountPath": "/var/run/postgresql"},
                                    {"name": "tmp", "mountPath": "/tmp"},
                                ],
                            }
                        ],
                        "volumes": [
                            {"name": "run", "emptyDir": {"sizeLimit": "16Mi"}},
                            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                        ],
                    },
                },
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": claim}],
            },
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[credentials, service])
            ),
        )
        # Only the gateway's pods reach the database; it needs no egress at all.
        k8s.networking.v1.NetworkPolicy(
            self.child_name("postgres-network-policy"),
            metadata={
                "name": IN_CLUSTER_NAME,
                "namespace": ns,
                "labels": labels("database", IN_CLUSTER_NAME),
            },
            spec={
                "podSelector": {"matchLabels": pod_labels},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "llm-gateway"}}}],
                        "ports": [{"protocol": "TCP", "port": POSTGRES_PORT}],
                    }
                ],
                "egress": [],
            },
            opts=opts,
        )
        host = f"{IN_CLUSTER_NAME}.{ns}.svc.cluster.local"
        return postgres_url(settings.user, password, host, POSTGRES_PORT, settings.name)

    def _cloudnativepg(self, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        settings, ns = self._args.settings, self._args.namespace
        cnpg = settings.cloudnativepg
        password = self._password("cnpg-app-password", opts)
        credentials_name = f"{CNPG_CLUSTER_NAME}-app-credentials"
        credentials = k8s.core.v1.Secret(
            self.child_name("cnpg-app-credentials"),
            metadata={
                "name": credentials_name,
                "namespace": ns,
                "labels": labels("database", CNPG_CLUSTER_NAME),
            },
            type="kubernetes.io/basic-auth",
            string_data={"username": settings.user, "password": password},
            opts=opts,
        )
        storage: dict[str, Any] = {"size": cnpg.storage_size}
        if cnpg.storage_class:
            storage["storageClass"] = cnpg.storage_class
        k8s.apiextensions.CustomResource(
            self.child_name("cnpg-cluster"),
            api_version="postgresql.cnpg.io/v1",
            kind="Cluster",
            metadata={
                "name": CNPG_CLUSTER_NAME,
                "namespace": ns,
                "labels": labels("database", CNPG_CLUSTER_NAME),
            },
            spec={
                "instances": cnpg.instances,
                "imageName": cnpg.image_name,
                "primaryUpdateStrategy": "unsupervised",
                "storage": storage,
                "bootstrap": {
                    "initdb": {
                        "database": settings.name,
                        "owner": settings.user,
                        "secret": {"name": credentials_name},
                    }
                },
                # Instances on different nodes and, where possible, zones.
                "affinity": {
                    "enablePodAntiAffinity": True,
                    "podAntiAffinityType": "required",
                    "topologyKey": "kubernetes.io/hostname",
                },
            },
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[credentials])),
        )
        host = f"{CNPG_CLUSTER_NAME}-rw.{ns}.svc.cluster.local"
        return postgres_url(settings.user, password, host, POSTGRES_PORT, settings.name)

    def _aws_rds(self, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        args = self._args
        settings, aws_rds = args.settings, args.settings.aws_rds
        identifier = args.identifier
        tags = {**args.tags, "production": str(args.production).lower()}
        subnets = rds.SubnetGroup(
            self.child_name("rds-subnets"),
            name=identifier,
            subnet_ids=aws_rds.subnet_ids,
            tags=tags,
            opts=opts,
        )
        security_group = ec2.SecurityGroup(
            self.child_name("rds-security-group"),
            name=f"{identifier}-db",
            description="PostgreSQL for the LLM gateway: reachable only from the Kubernetes nodes",
            vpc_id=aws_rds.vpc_id,
            ingress=[
                ec2.SecurityGroupIngressArgs(
                    protocol="tcp",
                    from_port=POSTGRES_PORT,
                    to_port=POSTGRES_PORT,
                    security_groups=[aws_rds.cluster_security_group_id],
                    description="PostgreSQL from the cluster nodes",
                )
            ],
            egress=[],
            tags=tags,
            opts=opts,
        )
        password = self._password("rds-master-password", opts)
        instance = rds.Instance(
            self.child_name("rds-instance"),
            identifier=identifier,
            engine="postgres",
            engine_version=aws_rds.engine_version,
            instance_class=aws_rds.instance_class,
            allocated_storage=aws_rds.allocated_storage_gb,
            max_allocated_storage=aws_rds.max_allocated_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=aws_rds.kms_key_id,
            db_name=settings.name,
            username=settings.user,
            password=password,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[security_group.id],
            publicly_accessible=False,
            multi_az=args.production,
            deletion_protection=args.production,
            backup_retention_period=args.backup_retention_days,
            skip_final_snapshot=False,
            final_snapshot_identifier=f"{identifier}-final",
            copy_tags_to_snapshot=True,
            auto_minor_version_upgrade=True,
            performance_insights_enabled=True,
            # Outside production, changes apply now instead of in the next maintenance window.
            apply_immediately=not args.production,
            tags=tags,
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(additional_secret_outputs=["password"], protect=args.production)
            ),
        )
        return postgres_url(settings.user, password, instance.address, instance.port, settings.name)

    def _external(self, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        return pulumi.Output.secret(self._args.external_url)
