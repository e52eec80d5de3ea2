"""Upstream providers, built once from settings."""

from __future__ import annotations

from gateway_app.config import ProviderSettings, ResilienceSettings
from gateway_app.providers.base import Provider, UpstreamCall, UpstreamError
from gateway_app.providers.echo import EchoProvider
from gateway_app.providers.openai_compat import OpenAICompatProvider

__all__ = ["Provider", "UpstreamCall", "UpstreamError", "build_provider"]


def build_provider(settings: ProviderSettings, resilience: ResilienceSettings | None = None) -> Provider:
    if settings.type == "echo":
        return EchoProvider(settings.name)
    if settings.endpoints:  # regional base URLs, each with its own breaker (providers/regional.py)
        from gateway_app.providers.regional import RegionalProvider

        return RegionalProvider(settings, resilience or ResilienceSettings())
    if settings.type == "openai_compat":
        return OpenAICompatProvider(settings)
    from gateway_app.providers.vertex import build_vertex_provider

    return build_vertex_provider(settings)
