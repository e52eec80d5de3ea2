"""The gateway's secrets: generated where not supplied, kept in a Kubernetes Secret or Secrets Manager."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
from pulumi_aws import secretsmanager

from stacks.components.base import Component
from stacks.gateway_config import (
    BOOTSTRAP_ADMIN_PASSWORD_ENV,
    DATABASE_URL_ENV,
    ENCRYPTION_KEY_ENV,
    SEED_KEY_ENV,
)
from stacks.k8s import labels
from stacks.settings import SecretsSettings, SuppliedSecrets

SECRET_NAME = "llm-gateway-env"


@dataclass(frozen=True)
class GatewaySecretsArgs:
    settings: SecretsSettings
    namespace: str
    database_url: pulumi.Output[str]
    # The env vars the gateway config refers to besides the database URL.
    provider_key_envs: tuple[str, ...] = ()
    bootstrap_admin: bool = False
    seed_key: bool = False
    supplied: SuppliedSecrets = field(default_factory=SuppliedSecrets)
    # aws_secrets_manager: the secret's name (unique per account and region; default
    # '<component name>/gateway') and tags.
    secrets_manager_name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)


class GatewaySecrets(Component):
    """Makes the Kubernetes Secret ``secret_name`` hold every env var the gateway config refers to."""

    secret_name: str
    # What the pods must wait for: the Secret, or the ExternalSecret that creates it.
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: GatewaySecretsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("GatewaySecrets", name, opts)
        child = self.child_opts()
        values = self._values(args, child)
        self.secret_name = SECRET_NAME
        if args.settings.backend == "kubernetes":
            provider_keys = args.supplied.provider_api_keys or pulumi.Output.secret({})
            for env in args.provider_key_envs:
                values[env] = pulumi.Output.secret(provider_keys.apply(lambda keys, env=env: keys[env]))
            secret = k8s.core.v1.Secret(
                self.child_name("env"),
                metadata={"name": SECRET_NAME, "namespace": args.namespace, "labels": labels("secrets")},
                type="Opaque",
                # One secret value per key: the key names stay visible in previews, the values never.
                string_data=values,
                opts=child,
            )
            self.ready = [secret]
        else:
            self.ready = [self._secrets_manager(args, values, child)]
        self.register_outputs({"secretName": self.secret_name})

    def _values(
        self, args: GatewaySecretsArgs, opts: pulumi.ResourceOptions
    ) -> dict[str, pulumi.Output[str]]:
        supplied = args.supplied
        values: dict[str, pulumi.Input[str]] = {
            DATABASE_URL_ENV: args.database_url,
            ENCRYPTION_KEY_ENV: supplied.encryption_key
            or random.RandomPassword(
                self.child_name("encryption-key"), length=64, special=False, opts=opts
            ).result,
        }
        if args.bootstrap_admin:
            values[BOOTSTRAP_ADMIN_PASSWORD_ENV] = (
                supplied.bootstrap_admin_password
                or random.RandomPassword(
                    self.child_name("bootstrap-admin-password"),
                    length=24,
                    special=True,
                    override_special="-_.,:+",
                    opts=opts,
                ).result
            )
        if args.seed_key:
            values[SEED_KEY_ENV] = supplied.seed_key or self._generated_seed_key(opts)
        return {env: pulumi.Output.secret(value) for env, value in values.items()}

    def _generated_seed_key(self, opts: pulumi.ResourceOptions) -> pulumi.Output[str]:
        # The gateway key format: gwk_<public_id 12 x [a-z0-9]>.<secret 40 x [A-Za-z0-9]>.
        # RandomString's result is plain in the state unless marked: both halves are encrypted there.
        secret_result = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["result"])
        )
        public_id = random.RandomString(
            self.child_name("seed-key-public-id"), length=12, special=False, upper=False, opts=secret_result
        )
        secret = random.RandomString(
            self.child_name("seed-key-secret"), length=40, special=False, opts=secret_result
        )
        return pulumi.Output.format("gwk_{0}.{1}", public_id.result, secret.result)

    def _secrets_manager(
        self, args: GatewaySecretsArgs, values: dict[str, pulumi.Output[str]], opts: pulumi.ResourceOptions
    ) -> pulumi.Resource:
        settings = args.settings
        stored = secretsmanager.Secret(
            self.child_name("env-secret"),
            name=args.secrets_manager_name or f"{self.resource_name}/gateway",
            description="LLM gateway environment: database URL, bootstrap admin, seeded key, encryption key",
            recovery_window_in_days=settings.recovery_window_days,
            kms_key_id=settings.kms_key_id,
            tags=dict(args.tags),
            opts=opts,
        )
        version = secretsmanager.SecretVersion(
            self.child_name("env-secret-version"),
            secret_id=stored.id,
            secret_string=pulumi.Output.secret(
                pulumi.Output.all(**values).apply(lambda v: json.dumps(v, sort_keys=True))
            ),
            opts=opts,
        )
        sources = [{"extract": {"key": stored.name}}]
        if settings.provider_keys_secret:
            sources.append({"extract": {"key": settings.provider_keys_secret}})
        return k8s.apiextensions.CustomResource(
            self.child_name("env-external-secret"),
            api_version="external-secrets.io/v1",
            kind="ExternalSecret",
            metadata={"name": SECRET_NAME, "namespace": args.namespace, "labels": labels("secrets")},
            spec={
                "refreshInterval": settings.refresh_interval,
                "secretStoreRef": {"kind": "ClusterSecretStore", "name": settings.secret_store},
                "target": {"name": SECRET_NAME, "creationPolicy": "Owner"},
                "dataFrom": sources,
            },
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[version])),
        )
