"""The gateway's NetworkPolicy: in from the ingress controller, out to DNS, the database and providers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from stacks.components.base import Component
from stacks.components.database import CNPG_CLUSTER_NAME, IN_CLUSTER_NAME, POSTGRES_PORT
from stacks.gateway_config import PORT
from stacks.k8s import APP_NAME, NAME_LABEL, labels, selector
from stacks.settings import DatabaseSettings, GatewayAppSettings

PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
NAMESPACE_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class GatewayNetworkArgs:
    namespace: str
    database: DatabaseSettings
    # Endpoints the gateway calls (providers, OTLP): see upstream_urls().
    upstream_urls: tuple[str, ...]
    # Namespaces allowed in: the ingress controller's (and the monitoring one with a ServiceMonitor).
    source_namespaces: tuple[str, ...]


def upstream_urls(app: GatewayAppSettings) -> tuple[str, ...]:
    """The base URLs of the gateway's providers and its OTLP endpoints."""
    urls = [p.base_url for p in app.providers if p.base_url]
    return tuple(urls + [url for url in (app.otel_endpoint, app.otel_metrics_endpoint) if url])


def _namespace(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: name}}}


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def url_egress(url: str) -> dict[str, Any]:
    """Egress to an endpoint URL: its namespace for in-cluster services, else the public internet."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    labels_of_host = host.split(".")
    if host.endswith((".svc", ".svc.cluster.local")) and len(labels_of_host) >= 3:
        return {"to": [_namespace(labels_of_host[1])], "ports": _tcp(port)}
    return {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}], "ports": _tcp(port)}


def database_egress(database: DatabaseSettings) -> dict[str, Any]:
    if database.kind == "in_cluster":
        return {
            "to": [{"podSelector": {"matchLabels": selector("database", IN_CLUSTER_NAME)}}],
            "ports": _tcp(POSTGRES_PORT),
        }
    if database.kind == "cloudnativepg":
        return {
            "to": [{"podSelector": {"matchLabels": {"cnpg.io/cluster": CNPG_CLUSTER_NAME}}}],
            "ports": _tcp(POSTGRES_PORT),
        }
    section = database.aws_rds if database.kind == "aws_rds" else database.external
    port = POSTGRES_PORT if database.kind == "aws_rds" else database.external.port
    return {"to": [{"ipBlock": {"cidr": cidr}} for cidr in section.egress_cidrs], "ports": _tcp(port)}


def egress_rules(database: DatabaseSettings, urls: tuple[str, ...]) -> list[dict[str, Any]]:
    dns = {
        "to": [{**_namespace("kube-system"), "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    rules = [dns, database_egress(database)]
    for rule in map(url_egress, urls):
        if rule not in rules:
            rules.append(rule)
    return rules


def ingress_rules(source_namespaces: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"from": [_namespace(name) for name in source_namespaces], "ports": _tcp(PORT)}]


class GatewayNetwork(Component):
    def __init__(self, name: str, args: GatewayNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("GatewayNetwork", name, opts)
        k8s.networking.v1.NetworkPolicy(
            self.child_name("policy"),
            metadata={"name": APP_NAME, "namespace": args.namespace, "labels": labels("network")},
            spec={
                # The server and its Jobs: everything labelled as the gateway.
                "podSelector": {"matchLabels": {NAME_LABEL: APP_NAME}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress_rules(args.source_namespaces),
                "egress": egress_rules(args.database, args.upstream_urls),
            },
            opts=self.child_opts(),
        )
        self.register_outputs({})
