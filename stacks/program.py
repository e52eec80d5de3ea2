"""The Pulumi program: validate the stack's settings, then declare the environment."""

from __future__ import annotations

import pulumi

from stacks.components.environment import GatewayEnvironment, GatewayEnvironmentArgs
from stacks.gateway_config import config_checksum
from stacks.settings import load_settings


def main() -> None:
    settings, supplied = load_settings()
    environment = GatewayEnvironment(
        "llm-gateway", GatewayEnvironmentArgs(settings=settings, supplied=supplied, stack=pulumi.get_stack())
    )
    # Plain facts only: every secret stays inside the Secret / Secrets Manager.
    pulumi.export("namespace", environment.namespace)
    pulumi.export("service", f"{environment.service_name}.{environment.namespace}.svc.cluster.local")
    pulumi.export("image", settings.image_ref)
    pulumi.export("databaseKind", settings.database.kind)
    pulumi.export("configChecksum", config_checksum(settings.gateway))
