"""The gateway's config file, rendered from typed stack settings.

The result matches ``gateway_app/config.py`` field for field; secrets appear only as
``env.NAME`` references whose values the pods receive from the gateway Secret.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from stacks.settings import GatewayAppSettings

CONFIG_DIR = "/etc/gateway"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
PORT = 8080

DATABASE_URL_ENV = "GATEWAY_DATABASE_URL"
BOOTSTRAP_ADMIN_PASSWORD_ENV = "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD"
SEED_KEY_ENV = "GATEWAY_SEED_KEY"
ENCRYPTION_KEY_ENV = "GATEWAY_ENCRYPTION_KEY"


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def render_gateway_config(app: GatewayAppSettings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": _without_none(
            {
                "host": "0.0.0.0",
                "port": PORT,
                "shutdown_grace_seconds": app.shutdown_grace_seconds,
                "request_timeout_seconds": app.request_timeout_seconds,
                "access_log": app.access_log,
                "log_level": app.log_level,
                "otel_endpoint": app.otel_endpoint,
                "otel_metrics_endpoint": app.otel_metrics_endpoint,
                # Client addresses (login throttling, logs) and TLS (Secure cookie) come from the ingress.
                "trusted_proxies": list(app.trusted_proxies),
            }
        ),
        # check: pods never migrate on start; the migration Job does, before they roll.
        "database": {
            "url": f"env.{DATABASE_URL_ENV}",
            "migrations": "check",
            "pool_min": app.pool_min,
            "pool_max": app.pool_max,
        },
        "providers": [
            _without_none(
                {
                    "name": p.name,
                    "type": p.type,
                    "enabled": p.enabled,
                    "base_url": p.base_url,
                    "endpoints": [{"region": e.region, "base_url": e.base_url} for e in p.endpoints]
                    if p.endpoints
                    else None,
                    "api_key": f"env.{p.api_key_env}" if p.api_key_env else None,
                    "pricing_provider_id": p.pricing_provider_id,
                    "timeout_seconds": p.timeout_seconds,
                }
            )
            for p in app.providers
        ],
        "models": [
            {
                "name": m.name,
                "operations": list(m.operations),
                "routes": [
                    {
                        "provider": r.provider,
                        "upstream_model": r.upstream_model,
                        "priority": r.priority,
                        "weight": r.weight,
                        "enabled": r.enabled,
                    }
                    for r in m.routes
                ],
            }
            for m in app.models
        ],
        "request_logging": {
            "mode": app.request_logging_mode,
            "purge": {"enabled": app.purge_retention is not None, "retention": app.purge_retention or "7d"},
        },
    }
    if app.bootstrap_admin_email:
        config["auth"] = {
            "bootstrap_admin": {
                "enabled": True,
                "email": app.bootstrap_admin_email,
                "password": f"env.{BOOTSTRAP_ADMIN_PASSWORD_ENV}",
                "require_password_change": True,
            }
        }
    if app.seed_service_account:
        account = app.seed_service_account
        config["service_accounts"] = [
            _without_none(
                {
                    "name": account.name,
                    "budget": {"window": "daily", "limit_usd": account.daily_budget_usd}
                    if account.daily_budget_usd is not None
                    else None,
                    "keys": [
                        {
                            "name": account.name,
                            "secret": f"env.{SEED_KEY_ENV}",
                            "models": account.models if account.models == "all" else list(account.models),
                        }
                    ],
                }
            )
        ]
    return config


def config_yaml(app: GatewayAppSettings) -> str:
    return yaml.safe_dump(render_gateway_config(app), sort_keys=True, default_flow_style=False)


def config_checksum(app: GatewayAppSettings) -> str:
    return hashlib.sha256(config_yaml(app).encode()).hexdigest()
