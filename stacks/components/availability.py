"""HA scheduling objects around the gateway Deployment: PriorityClass, HPA and PodDisruptionBudget."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from stacks.components.base import Component
from stacks.k8s import labels, selector
from stacks.settings import SchedulingSettings


@dataclass(frozen=True)
class HighAvailabilityArgs:
    scheduling: SchedulingSettings
    namespace: str
    deployment_name: str


class HighAvailability(Component):
    def __init__(self, name: str, args: HighAvailabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("HighAvailability", name, opts)
        child = self.child_opts()
        sched, ns = args.scheduling, args.namespace
        if sched.priority_class:
            k8s.scheduling.v1.PriorityClass(
                self.child_name("priority-class"),
                metadata={"name": sched.priority_class.name, "labels": labels("scheduling")},
                value=sched.priority_class.value,
                global_default=False,
                preemption_policy="PreemptLowerPriority",
                description="LLM gateway serving pods: scheduled ahead of batch work",
                opts=child,
            )
        if sched.autoscaling:
            scaling = sched.autoscaling
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                self.child_name("hpa"),
                metadata={"name": args.deployment_name, "namespace": ns, "labels": labels("server")},
                spec={
                    "scaleTargetRef": {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": args.deployment_name,
                    },
                    "minReplicas": scaling.min_replicas,
                    "maxReplicas": scaling.max_replicas,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": scaling.target_cpu_utilization,
                                },
                            },
                        }
                    ],
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "selectPolicy": "Max",
                            "policies": [
                                {"type": "Percent", "value": 100, "periodSeconds": 60},
                                {"type": "Pods", "value": 4, "periodSeconds": 60},
                            ],
                        },
                        # One pod a minute: each leaving pod drains its streams first.
                        "scaleDown": {
                            "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
                            "selectPolicy": "Min",
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        },
                    },
                },
                opts=child,
            )
        # A single replica gets no budget: any budget would either block every drain or protect nothing.
        if sched.min_replicas >= 2:
            k8s.policy.v1.PodDisruptionBudget(
                self.child_name("pdb"),
                metadata={"name": args.deployment_name, "namespace": ns, "labels": labels("server")},
                spec={
                    "maxUnavailable": sched.pdb_max_unavailable,
                    "selector": {"matchLabels": selector("server")},
                    # Pods that are not ready protect nothing; let drains evict them.
                    "unhealthyPodEvictionPolicy": "AlwaysAllow",
                },
                opts=child,
            )
        self.register_outputs({"minReplicas": sched.min_replicas, "maxReplicas": sched.max_replicas})
