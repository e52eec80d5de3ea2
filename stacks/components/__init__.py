"""Pulumi ComponentResources that make up one gateway environment.

``GatewayEnvironment`` is the top-level component; a program may declare it more than once
(one per namespace). Every component names its children after itself (``<name>-<suffix>``),
so two environments in one stack never collide.
"""

from stacks.components.environment import GatewayEnvironment, GatewayEnvironmentArgs

__all__ = ["GatewayEnvironment", "GatewayEnvironmentArgs"]
