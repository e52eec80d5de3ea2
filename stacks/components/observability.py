"""Prometheus and Grafana integration: a ServiceMonitor for /metrics, the gateway's alert rules
and its dashboard."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pulumi
import pulumi_kubernetes as k8s
import yaml

from stacks.components.base import Component
from stacks.k8s import APP_NAME, labels, selector
from stacks.settings import ObservabilitySettings

# The label kube-prometheus-stack's Grafana sidecar watches for (its `sidecar.dashboards.label`).
GRAFANA_DASHBOARD_LABEL = "grafana_dashboard"


def gateway_dashboard() -> str:
    """The dashboard JSON, as the gateway package ships it (package data, not a repository file)."""
    return (resources.files("gateway_app") / "dashboards" / "gateway.json").read_text()


def gateway_alert_rules() -> str:
    """The alert rules (a plain Prometheus rules file), as the gateway package ships them."""
    return (resources.files("gateway_app") / "alerts" / "rules.yml").read_text()


@dataclass(frozen=True)
class ObservabilityArgs:
    settings: ObservabilitySettings
    namespace: str
    # A Prometheus rules file's text to deploy instead of the gateway's own rules.
    alert_rules: str | None = None


class Observability(Component):
    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("Observability", name, opts)
        child = self.child_opts()
        if args.settings.service_monitor:
            k8s.apiextensions.CustomResource(
                self.child_name("service-monitor"),
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata={"name": APP_NAME, "namespace": args.namespace, "labels": labels("monitoring")},
                spec={
                    "selector": {"matchLabels": selector("server")},
                    "endpoints": [{"port": "http", "path": "/metrics", "interval": "30s"}],
                },
                opts=child,
            )
        if args.settings.prometheus_rule:
            rules = yaml.safe_load(args.alert_rules or gateway_alert_rules())
            k8s.apiextensions.CustomResource(
                self.child_name("prometheus-rule"),
                api_version="monitoring.coreos.com/v1",
                kind="PrometheusRule",
                metadata={"name": APP_NAME, "namespace": args.namespace, "labels": labels("monitoring")},
                spec={"groups": rules["groups"]},
                opts=child,
            )
        if args.settings.grafana_dashboard:
            k8s.core.v1.ConfigMap(
                self.child_name("grafana-dashboard"),
                metadata={
                    "name": f"{APP_NAME}-dashboard",
                    "namespace": args.namespace,
                    "labels": {**labels("monitoring"), GRAFANA_DASHBOARD_LABEL: "1"},
                },
                data={"llm-gateway.json": gateway_dashboard()},
                opts=child,
            )
        self.register_outputs({})
