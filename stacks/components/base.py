"""The base of every component: a type token in the project's namespace and child naming."""

from __future__ import annotations

import pulumi

TYPE_PREFIX = "llm-gateway:stack"


class Component(pulumi.ComponentResource):
    """A ComponentResource whose children are named ``<its name>-<suffix>`` and parented to it."""

    def __init__(self, kind: str, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:{kind}", name, None, opts)
        self.resource_name = name

    def child_name(self, suffix: str) -> str:
        return f"{self.resource_name}-{suffix}"

    def child_opts(self, **options: object) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **options)
