"""The gateway itself: config, ServiceAccount, migration and one-off Jobs, Deployment, Service, Ingress."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from stacks.components.base import Component
from stacks.gateway_config import CONFIG_DIR, CONFIG_PATH, PORT, config_checksum, config_yaml
from stacks.k8s import (
    APP_NAME,
    GATEWAY_UID,
    checkov_skips,
    container_security_context,
    labels,
    pod_security_context,
    selector,
)
from stacks.scheduling import node_pool_placement, server_placement
from stacks.settings import GatewayAppSettings, IngressSettings, JobsSettings, SchedulingSettings

PRE_STOP_SLEEP_SECONDS = 5
# Room after the drain for the process to exit before SIGKILL.
EXIT_MARGIN_SECONDS = 5
CONFIG_MAP_NAME = f"{APP_NAME}-config"
# The key of the config file in the ConfigMap, and the Deployment's container.
CONFIG_MAP_KEY = "config.yaml"
GATEWAY_CONTAINER = "gateway"
SERVICE_PORT = 80


@dataclass(frozen=True)
class GatewayArgs:
    namespace: str
    # The image reference: repository:tag or repository@sha256:digest.
    image: str
    app: GatewayAppSettings
    scheduling: SchedulingSettings
    # The Secret the pods take their env from (see GatewaySecrets).
    secret_name: str
    ingress: IngressSettings = field(default_factory=IngressSettings)
    jobs: JobsSettings = field(default_factory=JobsSettings)
    service_account_annotations: Mapping[str, str] = field(default_factory=dict)
    # Resources the pods need before they start: the gateway Secret (or its ExternalSecret) and the database.
    prerequisites: list[pulumi.Resource] = field(default_factory=list)

    @property
    def pinned_by_digest(self) -> bool:
        return "@sha256:" in self.image


def _container_skips(args: GatewayArgs) -> dict[str, str]:
    reasons = {
        "CKV_K8S_35": "the gateway contract reads secrets as env.NAME references from the pod "
        "environment; values come from a Secret via envFrom, never from the ConfigMap"
    }
    if args.app.resources.cpu_limit is None:
        reasons["CKV_K8S_11"] = (
            "no CPU limit by design: CFS throttling stalls streamed responses; the CPU request "
            "reserves capacity and the HPA scales on it"
        )
    if not args.pinned_by_digest:
        reasons["CKV_K8S_43"] = "this stack pins the image by an immutable release tag (imageTag)"
    return reasons


class Gateway(Component):
    deployment_name: str
    service_name: str
    config_checksum: str

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("Gateway", name, opts)
        self._args = args
        self._checksum = config_checksum(args.app)
        self.config_checksum = self._checksum
        self.deployment_name = APP_NAME
        self.service_name = APP_NAME
        child = self.child_opts()
        ns = args.namespace

        config_map = k8s.core.v1.ConfigMap(
            self.child_name("config"),
            metadata={"name": CONFIG_MAP_NAME, "namespace": ns, "labels": labels("server")},
            data={CONFIG_MAP_KEY: config_yaml(args.app)},
            opts=child,
        )
        service_account = k8s.core.v1.ServiceAccount(
            self.child_name("service-account"),
            metadata={
                "name": APP_NAME,
                "namespace": ns,
                "labels": labels("server"),
                "annotations": dict(args.service_account_annotations),
            },
            # The gateway never calls the Kubernetes API.
            automount_service_account_token=False,
            opts=child,
        )
        before_pods = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=[config_map, service_account, *args.prerequisites])
        )
        migrate = self._job("migrate", ["migrate", "--apply"], ttl=False, opts=before_pods)
        after_migrate = pulumi.ResourceOptions.merge(
            before_pods, pulumi.ResourceOptions(depends_on=[migrate])
        )
        if args.jobs.bootstrap_admin:
            self._job("bootstrap-admin", ["bootstrap-admin"], ttl=True, opts=after_migrate)
        if args.jobs.seed:
            self._job("seed", ["seed-config"], ttl=True, opts=after_migrate)
        # The migration Job must complete before new pods roll: pods run with migrations: check.
        self._deployment(after_migrate)
        service = k8s.core.v1.Service(
            self.child_name("service"),
            metadata={"name": APP_NAME, "namespace": ns, "labels": labels("server")},
            spec={
                "type": "ClusterIP",
                "selector": selector("server"),
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
            opts=child,
        )
        if args.ingress.enabled:
            self._ingress(pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[service])))
        self.register_outputs(
            {
                "deploymentName": self.deployment_name,
                "serviceName": self.service_name,
                "configChecksum": self._checksum,
                "image": args.image,
            }
        )

    def _pod_spec(self, container: dict[str, Any], restart_policy: str) -> dict[str, Any]:
        return {
            "serviceAccountName": APP_NAME,
            "automountServiceAccountToken": False,
            "restartPolicy": restart_policy,
            "securityContext": pod_security_context(GATEWAY_UID),
            "containers": [container],
            "volumes": [
                {
                    "name": "config",
                    "configMap": {
                        "name": CONFIG_MAP_NAME,
                        "items": [{"key": CONFIG_MAP_KEY, "path": "config.yaml"}],
                    },
                },
                # The only writable path: the root filesystem is read-only.
                {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            ],
        }

    def _container(self, name: str, command_args: list[str]) -> dict[str, Any]:
        args = self._args
        resources = args.app.resources
        limits = {"memory": resources.memory_limit}
        if resources.cpu_limit:
            limits["cpu"] = resources.cpu_limit
        return {
            "name": name,
            "image": args.image,
            # A digest never changes; a tag is re-checked so every node runs what the registry says.
            "imagePullPolicy": "IfNotPresent" if args.pinned_by_digest else "Always",
            "command": ["gateway"],
            "args": [*command_args, "--config", CONFIG_PATH],
            "envFrom": [{"secretRef": {"name": args.secret_name}}],
            "resources": {
                "requests": {"cpu": resources.requests.cpu, "memory": resources.requests.memory},
                "limits": limits,
            },
            "securityContext": container_security_context(GATEWAY_UID),
            "volumeMounts": [
                {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }

    def _job(
        self, purpose: str, command_args: list[str], ttl: bool, opts: pulumi.ResourceOptions
    ) -> k8s.batch.v1.Job:
        args = self._args
        # Jobs are immutable: a new image or config gets a new Job, so each release migrates once.
        revision = hashlib.sha256(f"{args.image}\n{self._checksum}".encode()).hexdigest()[:10]
        job_labels = labels(purpose)
        spec: dict[str, Any] = {
            "backoffLimit": 2,
            "activeDeadlineSeconds": 900,
            "template": {
                "metadata": {"labels": job_labels},
                "spec": {
                    **self._pod_spec(self._container(purpose, command_args), "Never"),
                    **node_pool_placement(args.scheduling),
                },
            },
        }
        if ttl:
            spec["ttlSecondsAfterFinished"] = args.jobs.ttl_seconds_after_finished
        return k8s.batch.v1.Job(
            self.child_name(f"{purpose}-job"),
            metadata={
                "name": f"{APP_NAME}-{purpose}-{revision}",
                "namespace": args.namespace,
                "labels": job_labels,
                "annotations": checkov_skips(_container_skips(args)),
            },
            spec=spec,
            opts=opts,
        )

    def _deployment(self, opts: pulumi.ResourceOptions) -> k8s.apps.v1.Deployment:
        args = self._args
        sched, grace = args.scheduling, args.app.shutdown_grace_seconds
        container = {
            **self._container(GATEWAY_CONTAINER, ["serve"]),
            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
            "startupProbe": {
                "httpGet": {"path": "/healthz", "port": "http"},
                "periodSeconds": 2,
                "failureThreshold": 30,
                "timeoutSeconds": 2,
            },
            "livenessProbe": {
                "httpGet": {"path": "/healthz", "port": "http"},
                "periodSeconds": 10,
                "failureThreshold": 3,
                "timeoutSeconds": 2,
            },
            # 503 while the database is unreachable or the schema is not current.
            "readinessProbe": {
                "httpGet": {"path": "/readyz", "port": "http"},
                "periodSeconds": 5,
                "failureThreshold": 2,
                "timeoutSeconds": 2,
            },
            # The sleep lets endpoints drop the pod before SIGTERM starts the drain.
            "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
        }
        pod_spec = {
            **self._pod_spec(container, "Always"),
            **server_placement(sched, selector("server")),
            "terminationGracePeriodSeconds": PRE_STOP_SLEEP_SECONDS + grace + EXIT_MARGIN_SECONDS,
        }
        spec: dict[str, Any] = {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector("server")},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": sched.max_surge},
            },
            "minReadySeconds": 5,
            "progressDeadlineSeconds": 600,
            "template": {
                # The checksum changes with the config, so a config change rolls the pods.
                "metadata": {"labels": labels("server"), "annotations": {"checksum/config": self._checksum}},
                "spec": pod_spec,
            },
        }
        # With an HPA, the HPA owns the replica count; declaring it here would fight every scale.
        if sched.autoscaling is None:
            spec["replicas"] = sched.min_replicas
        return k8s.apps.v1.Deployment(
            self.child_name("deployment"),
            metadata={
                "name": self.deployment_name,
                "namespace": args.namespace,
                "labels": labels("server"),
                "annotations": checkov_skips(_container_skips(args)),
            },
            spec=spec,
            opts=opts,
        )

    def _ingress(self, opts: pulumi.ResourceOptions) -> k8s.networking.v1.Ingress:
        args = self._args
        ingress = args.ingress
        spec: dict[str, Any] = {
            "ingressClassName": ingress.class_name,
            "rules": [
                {
                    "host": ingress.host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": self.service_name, "port": {"name": "http"}}},
                            }
                        ]
                    },
                }
            ],
        }
        if ingress.tls_secret_name:
            spec["tls"] = [{"hosts": [ingress.host], "secretName": ingress.tls_secret_name}]
        timeout = str(int(args.app.request_timeout_seconds) + 10)
        return k8s.networking.v1.Ingress(
            self.child_name("ingress"),
            metadata={
                "name": APP_NAME,
                "namespace": args.namespace,
                "labels": labels("server"),
                # Streamed completions: no proxy buffering, and reads outlast the request timeout.
                "annotations": {
                    "nginx.ingress.kubernetes.io/proxy-buffering": "off",
                    "nginx.ingress.kubernetes.io/proxy-read-timeout": timeout,
                    "nginx.ingress.kubernetes.io/proxy-send-timeout": timeout,
                },
            },
            spec=spec,
            opts=opts,
        )
