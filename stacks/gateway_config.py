"""The gateway's config file, built through the gateway's own typed settings.

The stack never spells the config's schema itself: it constructs ``gateway_app.config``
settings objects (a field the gateway renames or removes fails here, at construction,
with ``extra="forbid"``), dumps what it set, and checks that the dump parses back to the
same settings with the gateway's ``parse_settings`` (cross checks included: pricing ids,
routes, granted models). Secrets appear only as ``env.NAME`` references whose values the
pods receive from the gateway Secret.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from gateway_app import config as gw
from stacks.settings import GatewayAppSettings

CONFIG_DIR = "/etc/gateway"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
PORT = 8080

DATABASE_URL_ENV = "GATEWAY_DATABASE_URL"
BOOTSTRAP_ADMIN_PASSWORD_ENV = "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD"
SEED_KEY_ENV = "GATEWAY_SEED_KEY"
ENCRYPTION_KEY_ENV = "GATEWAY_ENCRYPTION_KEY"


def _env(name: str) -> gw.SecretRef:
    return gw.SecretRef(f"env.{name}")


def _set(**fields: Any) -> dict[str, Any]:
    """Keyword arguments without the unset (None) ones: the gateway's defaults apply to those."""
    return {key: value for key, value in fields.items() if value is not None}


def gateway_settings(app: GatewayAppSettings) -> gw.GatewaySettings:
    """The gateway's settings for this stack, as gateway_app.config objects."""
    server = gw.ServerSettings(
        **_set(
            host="0.0.0.0",
            port=PORT,
            shutdown_grace_seconds=app.shutdown_grace_seconds,
            request_timeout_seconds=app.request_timeout_seconds,
            access_log=app.access_log,
            log_level=app.log_level,
            otel_endpoint=app.otel_endpoint,
            otel_metrics_endpoint=app.otel_metrics_endpoint,
            # Client addresses (login throttling, logs) and TLS (Secure cookie) come from the ingress.
            trusted_proxies=list(app.trusted_proxies),
        )
    )
    # check: pods never migrate on start; the migration Job does, before they roll.
    database = gw.DatabaseSettings(
        url=_env(DATABASE_URL_ENV), migrations="check", pool_min=app.pool_min, pool_max=app.pool_max
    )
    providers = [
        gw.ProviderSettings(
            **_set(
                name=p.name,
                type=p.type,
                enabled=p.enabled,
                base_url=p.base_url,
                endpoints=[gw.EndpointSettings(region=e.region, base_url=e.base_url) for e in p.endpoints]
                if p.endpoints
                else None,
                api_key=_env(p.api_key_env) if p.api_key_env else None,
                pricing_provider_id=p.pricing_provider_id,
                timeout_seconds=p.timeout_seconds,
            )
        )
        for p in app.providers
    ]
    models = [
        gw.ModelSettings(
            name=m.name,
            operations=list(m.operations),
            routes=[
                gw.RouteSettings(
                    provider=r.provider,
                    upstream_model=r.upstream_model,
                    priority=r.priority,
                    weight=r.weight,
                    enabled=r.enabled,
                )
                for r in m.routes
            ],
        )
        for m in app.models
    ]
    request_logging = gw.RequestLoggingSettings(
        mode=app.request_logging_mode,
        purge=gw.PurgeSettings(
            enabled=app.purge_retention is not None, retention=app.purge_retention or "7d"
        ),
    )
    optional: dict[str, Any] = {}
    if app.bootstrap_admin_email:
        optional["auth"] = gw.AuthSettings(
            bootstrap_admin=gw.BootstrapAdminSettings(
                enabled=True,
                email=app.bootstrap_admin_email,
                password=_env(BOOTSTRAP_ADMIN_PASSWORD_ENV),
                require_password_change=True,
            )
        )
    if app.seed_service_account:
        account = app.seed_service_account
        budget = (
            gw.BudgetSettings(window="daily", limit_usd=account.daily_budget_usd)
            if account.daily_budget_usd is not None
            else None
        )
        key = gw.SeedKeySettings(
            name=account.name,
            secret=_env(SEED_KEY_ENV),
            models=account.models if account.models == "all" else list(account.models),
        )
        optional["service_accounts"] = [
            gw.ServiceAccountSettings(**_set(name=account.name, budget=budget, keys=[key]))
        ]
    return gw.GatewaySettings(
        server=server,
        database=database,
        providers=providers,
        models=models,
        request_logging=request_logging,
        **optional,
    )


def dump_settings(node: Any) -> Any:
    """Settings objects as config data: only the fields that were set; secrets as their reference."""
    if isinstance(node, gw.SecretRef):
        return node.ref
    if isinstance(node, BaseModel):
        return {
            name: dump_settings(getattr(node, name))
            for name in sorted(node.model_fields_set)
            if getattr(node, name) is not None
        }
    if isinstance(node, list):
        return [dump_settings(item) for item in node]
    return node


def _references(app: GatewayAppSettings) -> dict[str, str]:
    """A stand-in value for every env var the config refers to (values live in the Secret)."""
    names = [DATABASE_URL_ENV, BOOTSTRAP_ADMIN_PASSWORD_ENV, SEED_KEY_ENV, *app.provider_key_envs]
    return dict.fromkeys(names, "stand-in")


def render_gateway_config(app: GatewayAppSettings) -> dict[str, Any]:
    """The config file's content; raises gateway_app.config.ConfigError if the gateway refuses it."""
    try:
        settings = gateway_settings(app)
    except ValidationError as exc:
        raise gw.ConfigError(
            "built by the stack",
            [(".".join([exc.title, *map(str, e["loc"])]), e["msg"]) for e in exc.errors()],
        ) from None
    config = dump_settings(settings)
    # The pods read the YAML, not these objects: it must parse back to the very same settings.
    parsed = gw.parse_settings(config, "built by the stack", environ=_references(app))
    if dump_settings(parsed) != config:
        raise gw.ConfigError("built by the stack", [("(config)", "does not parse back to what was built")])
    return config


def config_yaml(app: GatewayAppSettings) -> str:
    return yaml.safe_dump(render_gateway_config(app), sort_keys=True, default_flow_style=False)


def config_checksum(app: GatewayAppSettings) -> str:
    return hashlib.sha256(config_yaml(app).encode()).hexdigest()
