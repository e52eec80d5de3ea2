"""The gateway's NetworkPolicy: in from the ingress controller, out to DNS, the database and providers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s

from stacks.components.database import CNPG_CLUSTER_NAME, IN_CLUSTER_NAME, POSTGRES_PORT
from stacks.gateway_config import PORT
from stacks.k8s import APP_NAME, NAME_LABEL, labels, selector
from stacks.settings import StackSettings

PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
NAMESPACE_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class GatewayNetworkArgs:
    settings: StackSettings


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


def database_egress(settings: StackSettings) -> dict[str, Any]:
    database = settings.database
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


def egress_rules(settings: StackSettings) -> list[dict[str, Any]]:
    dns = {
        "to": [{**_namespace("kube-system"), "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    app = settings.gateway
    urls = [p.base_url for p in app.providers if p.base_url] + [
        url for url in (app.otel_endpoint, app.otel_metrics_endpoint) if url
    ]
    rules = [dns, database_egress(settings)]
    for rule in map(url_egress, urls):
        if rule not in rules:
            rules.append(rule)
    return rules


def ingress_rules(settings: StackSettings) -> list[dict[str, Any]]:
    sources = [_namespace(settings.ingress.controller_namespace)]
    if settings.observability.service_monitor:
        sources.append(_namespace(settings.observability.monitoring_namespace))
    return [{"from": sources, "ports": _tcp(PORT)}]


class GatewayNetwork(pulumi.ComponentResource):
    def __init__(self, name: str, args: GatewayNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-gateway:stack:GatewayNetwork", name, None, opts)
        settings = args.settings
        k8s.networking.v1.NetworkPolicy(
            "gateway-network-policy",
            metadata={"name": APP_NAME, "namespace": settings.namespace, "labels": labels("network")},
            spec={
                # The server and its Jobs: everything labelled as the gateway.
                "podSelector": {"matchLabels": {NAME_LABEL: APP_NAME}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress_rules(settings),
                "egress": egress_rules(settings),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
