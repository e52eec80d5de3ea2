"""Two gateway environments in one stack: staging and a canary of the next release.

Each is one ``GatewayEnvironment`` in its own namespace with its own in-cluster database,
secrets and config; the components name every child after the environment, so nothing
collides. Run with the Pulumi CLI (``pulumi up`` in this directory) or offline under mocks
(tests/stacks/test_example.py).
"""

from __future__ import annotations

import pulumi

from stacks.components import GatewayEnvironment, GatewayEnvironmentArgs
from stacks.settings import (
    DatabaseSettings,
    GatewayAppSettings,
    InClusterDatabase,
    JobsSettings,
    ModelSpec,
    NodePool,
    ObservabilitySettings,
    ProviderSpec,
    RouteSpec,
    SchedulingSettings,
    SeedServiceAccount,
)

REPOSITORY = "ghcr.io/example/llm-gateway"

app = GatewayAppSettings(
    providers=[ProviderSpec(name="echo", type="echo", pricing_provider_id="echo")],
    models=[ModelSpec(name="echo-1", routes=[RouteSpec(provider="echo", upstream_model="echo-1")])],
    bootstrap_admin_email="admin@example.com",
    seed_service_account=SeedServiceAccount(name="smoke", daily_budget_usd=1),
)
pool = NodePool(
    name="general",
    zones=["zone-a", "zone-b"],
    nodes_per_zone=2,
    allocatable_cpu="4",
    allocatable_memory="8Gi",
)

environments = {
    "staging": GatewayEnvironment(
        "staging",
        GatewayEnvironmentArgs(
            namespace="gateway-staging",
            image=f"{REPOSITORY}:0.1.0",
            app=app,
            database=DatabaseSettings(kind="in_cluster"),
            scheduling=SchedulingSettings(replicas=2, node_pool=pool.name, node_pools=[pool]),
            jobs=JobsSettings(bootstrap_admin=True, seed=True),
            # The gateway's alert rules and Grafana dashboard (package data of gateway_app).
            observability=ObservabilitySettings(prometheus_rule=True, grafana_dashboard=True),
        ),
    ),
    "canary": GatewayEnvironment(
        "canary",
        GatewayEnvironmentArgs(
            namespace="gateway-canary",
            image=f"{REPOSITORY}:0.2.0",
            app=app.model_copy(update={"log_level": "debug"}),
            database=DatabaseSettings(kind="in_cluster", in_cluster=InClusterDatabase(storage_size="1Gi")),
            scheduling=SchedulingSettings(replicas=1, node_pool=pool.name, node_pools=[pool]),
        ),
    ),
}

for name, environment in environments.items():
    pulumi.export(
        name,
        {
            "namespace": environment.namespace,
            "service": f"{environment.service_name}.{environment.namespace}.svc.cluster.local",
            "configChecksum": environment.config_checksum,
        },
    )
