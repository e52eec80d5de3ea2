"""Gateway settings: one YAML file, validated once into typed, frozen objects.

Secrets are never written in the file itself but as references:
``env.NAME`` (an environment variable), ``file.PATH`` (a mounted file) or
``literal.VALUE`` (demos and tests only). Every error names the field path and
the file so that an operator knows exactly what to fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

CONFIG_ENV_VAR = "GATEWAY_CONFIG"
_SECRET_REF = re.compile(r"^(env|file|literal)\.(.+)$", re.DOTALL)
_DURATION = re.compile(r"^(\d+)([smhd])$")
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` are (field path, message) pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"invalid gateway config {source}:"]
        lines += [f"  {path}: {message}" for path, message in problems]
        super().__init__("\n".join(lines))


class SecretRef:
    """A reference to a secret; the value is resolved once and never printed."""

    __slots__ = ("_value", "ref")

    def __init__(self, ref: str):
        if not isinstance(ref, str) or not _SECRET_REF.match(ref):
            raise ValueError("must be a secret reference: env.NAME, file.PATH or literal.VALUE")
        self.ref = ref
        self._value: str | None = None

    @property
    def kind(self) -> str:
        return self.ref.split(".", 1)[0]

    @property
    def target(self) -> str:
        """The variable name or file path (the literal's text is never shown)."""
        return "<literal>" if self.kind == "literal" else self.ref.split(".", 1)[1]

    def resolve(self, environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
        kind, rest = self.ref.split(".", 1)
        if kind == "literal":
            value = rest
        elif kind == "env":
            value = environ.get(rest)
            if value is None or value == "":
                raise ValueError(f"environment variable {rest} is not set")
        else:
            try:
                value = Path(rest).read_text().strip()
            except OSError as exc:
                raise ValueError(f"secret file {rest} cannot be read ({exc.strerror})") from None
        self._value = value
        return value

    @property
    def value(self) -> str:
        if self._value is None:
            raise RuntimeError(f"secret {self.kind}.{self.target} was not resolved")
        return self._value

    def __repr__(self) -> str:
        return f"SecretRef({self.kind}.{self.target})"

    __str__ = __repr__


def _to_secret_ref(value: Any) -> SecretRef:
    return value if isinstance(value, SecretRef) else SecretRef(value)


Secret = Annotated[SecretRef, BeforeValidator(_to_secret_ref)]


def parse_duration(text: str) -> int:
    """'7d' -> seconds. Used for retention windows and grace periods."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"'{text}' is not a duration like 30s, 15m, 12h or 7d")
    return int(match.group(1)) * _DURATION_SECONDS[match.group(2)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # Seconds a stopping process waits for in-flight requests (streams included).
    shutdown_grace_seconds: float = Field(25.0, ge=0)
    # Overall deadline of one API request across all its attempts (streams: until the head).
    request_timeout_seconds: float = Field(120.0, gt=0)
    # Longest a stream may run once started; silence within it is bounded per provider.
    max_stream_seconds: float = Field(1800.0, gt=0)
    # Client side: the request head must arrive within this, and fit these limits (431).
    request_head_timeout_seconds: float = Field(10.0, gt=0)
    max_header_bytes: int = Field(64 * 1024, ge=1024)
    max_headers: int = Field(100, ge=8)
    keep_alive_timeout_seconds: float = Field(30.0, gt=0)
    # Open client connections; beyond it new ones get a 503 and are closed.
    max_connections: int = Field(8192, ge=1)
    access_log: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    otel_endpoint: str | None = None
    otel_metrics_endpoint: str | None = None
    otel_sample_ratio: float = Field(0.1, ge=0, le=1)
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0)
    # Peers whose X-Forwarded-For is believed (load balancers, ingress controllers):
    # the client address feeds login throttling and logs.
    trusted_proxies: list[str] = ["127.0.0.1"]


class DatabaseSettings(_Strict):
    url: Secret
    pool_min: int = Field(1, ge=1)
    pool_max: int = Field(10, ge=1)
    # auto: serve applies pending migrations (under a database lock) at start.
    # check: serve refuses to start until `migrate --apply` has been run.
    migrations: Literal["auto", "check"] = "check"
    connect_timeout_seconds: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _pool_bounds(self) -> DatabaseSettings:
        if self.pool_min > self.pool_max:
            raise ValueError("pool_min must not exceed pool_max")
        return self


class EndpointSettings(_Strict):
    """One regional base URL of an openai_compat provider (docs/providers.md)."""

    region: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=32)
    base_url: str = Field(pattern=r"^https?://[^/\s]+")


class ProviderSettings(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    type: Literal["echo", "openai_compat", "gcp_vertex"]
    enabled: bool = True
    base_url: str | None = None
    # Or several regional base URLs: traffic prefers the healthy, faster one (providers/regional.py).
    endpoints: list[EndpointSettings] | None = Field(None, min_length=1)
    api_key: Secret | None = None
    # Names the bundled pricing catalog entry used to cost this provider's usage.
    pricing_provider_id: str | None = None
    # Connect + response head (+ an error's body) of one attempt.
    timeout_seconds: float = Field(60.0, gt=0)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    # Longest silence between two pieces of a response body (a stalled upstream is cut after it).
    read_idle_timeout_seconds: float = Field(60.0, gt=0)
    # Largest non-stream response body; a bigger one is cut and answered 502.
    max_response_bytes: int = Field(64 * 1024 * 1024, gt=0)
    # Upstream connections per origin: each running stream holds one, so thousands fit.
    max_connections: int = Field(4096, ge=1)
    # Longest wait for a free connection when all max_connections are busy.
    pool_timeout_seconds: float = Field(10.0, gt=0)
    # gcp_vertex only
    project: str | None = None
    location: str | None = None
    credentials_file: Secret | None = None

    @model_validator(mode="before")
    @classmethod
    def _echo_priced_by_default(cls, data: Any) -> Any:
        # The offline echo provider has its own catalog entry, so budgets work in demos.
        if isinstance(data, dict) and data.get("type") == "echo" and "pricing_provider_id" not in data:
            return {**data, "pricing_provider_id": "echo"}
        return data

    @model_validator(mode="after")
    def _type_fields(self) -> ProviderSettings:
        if self.type == "openai_compat":
            if not self.base_url and not self.endpoints:
                raise ValueError("openai_compat providers need base_url (or endpoints)")
            if not self.pricing_provider_id:
                raise ValueError(
                    "openai_compat providers need pricing_provider_id "
                    "(a catalog id, or 'self_hosted' to price at zero)"
                )
        if self.type == "gcp_vertex" and not (self.project and self.location):
            raise ValueError("gcp_vertex providers need project and location")
        return self


class RouteSettings(_Strict):
    provider: str
    upstream_model: str
    priority: int = 0
    weight: int = Field(1, ge=0)
    enabled: bool = True
    # Price override in USD per million tokens, for models the catalog lacks.
    input_usd_per_mtok: float | None = Field(None, ge=0)
    output_usd_per_mtok: float | None = Field(None, ge=0)


class ModelCacheSettings(_Strict):
    """Opt-in exact-match response cache of one model (gateway_app/response_cache.py)."""

    ttl_seconds: int = Field(ge=1, le=7 * 86400)
    # Also cache chat requests that sample (temperature absent or above 0): one sampled
    # answer is then replayed to every identical request until it expires.
    sampled: bool = False


class ModelSettings(_Strict):
    name: str = Field(min_length=1)
    operations: list[Literal["chat", "embeddings"]] = ["chat"]
    routes: list[RouteSettings] = Field(min_length=1)
    cache: ModelCacheSettings | None = None


class BootstrapAdminSettings(_Strict):
    enabled: bool = False
    email: str = "admin@example.com"
    password: Secret | None = None
    require_password_change: bool = True
    # serve runs bootstrap-admin at start (idempotent; never resets a password).
    run_on_start: bool = False

    @model_validator(mode="after")
    def _password_when_enabled(self) -> BootstrapAdminSettings:
        if self.enabled and self.password is None:
            raise ValueError("password is required when bootstrap_admin is enabled")
        return self


class AuthSettings(_Strict):
    bootstrap_admin: BootstrapAdminSettings = BootstrapAdminSettings()
    # How often every replica reloads changed keys: the bound on revocation delay.
    key_cache_refresh_seconds: float = Field(2.0, gt=0, le=60)
    session_ttl_seconds: int = Field(12 * 3600, gt=0)
    # Admin login attempts per 15-minute window: from one client address (any accounts), and
    # against one account from addresses it has not logged in from lately (docs/control-plane.md).
    login_attempts_per_address: int = Field(10, ge=1)
    login_attempts_per_account: int = Field(100, ge=1)
    # How often each replica deletes expired login-throttle rows (at most THROTTLE_CLEANUP_BATCH a round).
    throttle_cleanup_seconds: float = Field(60.0, gt=0, le=3600)


class BudgetSettings(_Strict):
    window: Literal["daily", "weekly", "monthly"]
    limit_usd: float = Field(ge=0)


class SeedKeySettings(_Strict):
    name: str = Field(min_length=1)
    # The full key (gwk_<public_id>.<secret>); only its hash is stored.
    secret: Secret
    models: Literal["all"] | list[str] = "all"


class ServiceAccountSettings(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    budget: BudgetSettings | None = None
    keys: list[SeedKeySettings] = []


class PurgeSettings(_Strict):
    enabled: bool = False
    retention: Literal["1d", "3d", "7d"] = "7d"
    # Minute of the UTC day at which the daily purge may start.
    at_utc: str = Field("03:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


class RequestLoggingSettings(_Strict):
    mode: Literal["disabled", "summary_only", "redacted_payloads"] = "summary_only"
    max_payload_bytes: int = Field(16 * 1024, ge=0)
    # Records held with their request-log detail; past either bound the detail is shed
    # (counted) and only the ledger part is kept, up to ledger_queue_max more records.
    queue_max: int = Field(10_000, ge=1)
    queue_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    ledger_queue_max: int = Field(50_000, ge=1)
    # Records per transaction; unset: sized to the backend (see request_log.BATCH_SIZES).
    batch_size: int | None = Field(None, ge=1)
    flush_interval_seconds: float = Field(0.5, gt=0)
    # One write (or one replay step) waits at most this long on the database.
    write_timeout_seconds: float = Field(5.0, gt=0, le=60)
    # While ledger rows wait in the spool, replay is tried this often.
    retry_seconds: float = Field(1.0, gt=0, le=60)
    # Where ledger rows go while the database cannot take them (fsync'd, replayed in order).
    # Unset: a file in the system temp directory named after the database and port; set it
    # to a persistent volume in production so a restart replays what the last process kept.
    spool_path: str | None = None
    # ~200 bytes a row: about 240,000 rows. Fits the Kubernetes pod's /tmp (a 64 Mi emptyDir).
    spool_max_bytes: int = Field(48 * 1024 * 1024, ge=4096)
    purge: PurgeSettings = PurgeSettings()


class ResilienceSettings(_Strict):
    max_attempts: int = Field(3, ge=1)
    backoff_seconds: float = Field(0.05, ge=0)
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_window_seconds: float = Field(30.0, gt=0)
    breaker_open_seconds: float = Field(15.0, gt=0)
    # How often each replica reloads admin overrides (provider/route disable, resets).
    state_refresh_seconds: float = Field(2.0, gt=0, le=60)


class RateLimitSettings(_Strict):
    requests_per_minute: int | None = Field(None, ge=1)
    redis_url: Secret | None = None


class ResponseCacheSettings(_Strict):
    """Where cached answers live and the bounds of the in-process store (models opt in with `cache`)."""

    # auto: Redis when rate_limits.redis_url is set (shared by every replica), else this process.
    store: Literal["auto", "memory", "redis"] = "auto"
    # In-process store: past either bound the least recently used entries are evicted.
    max_entries: int = Field(10_000, ge=1)
    max_bytes: int = Field(64 * 1024 * 1024, ge=4096)
    # A larger answer is served but never stored (either store).
    max_entry_bytes: int = Field(1024 * 1024, ge=1024)
    # One Redis command waits at most this long; past it the request is a miss.
    redis_timeout_seconds: float = Field(0.25, gt=0, le=5)


class GatewaySettings(_Strict):
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings
    providers: list[ProviderSettings] = Field(min_length=1)
    models: list[ModelSettings] = Field(min_length=1)
    auth: AuthSettings = AuthSettings()
    service_accounts: list[ServiceAccountSettings] = []
    request_logging: RequestLoggingSettings = RequestLoggingSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    response_cache: ResponseCacheSettings = ResponseCacheSettings()

    @field_validator("providers")
    @classmethod
    def _unique_providers(cls, providers: list[ProviderSettings]) -> list[ProviderSettings]:
        names = [p.name for p in providers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"provider names must be unique; repeated: {', '.join(dupes)}")
        return providers

    def provider(self, name: str) -> ProviderSettings:
        return next(p for p in self.providers if p.name == name)


def _cross_checks(settings: GatewaySettings) -> list[tuple[str, str]]:
    """Checks that span sections: routes name real providers, Vertex model format."""
    problems: list[tuple[str, str]] = []
    providers = {p.name: p for p in settings.providers}
    for pi, provider in enumerate(settings.providers):
        if provider.type == "gcp_vertex" and provider.credentials_file is None:
            problems.append(
                (
                    f"providers[{pi}].credentials_file",
                    "gcp_vertex providers need credentials_file: a secret reference to the "
                    "service-account JSON (e.g. env.GOOGLE_APPLICATION_CREDENTIALS holding its path)",
                )
            )
    problems += _endpoint_checks(settings)
    seen_models: set[str] = set()
    for mi, model in enumerate(settings.models):
        if model.name in seen_models:
            problems.append((f"models[{mi}].name", f"model '{model.name}' is declared twice"))
        seen_models.add(model.name)
        for ri, route in enumerate(model.routes):
            path = f"models[{mi}].routes[{ri}]"
            provider = providers.get(route.provider)
            if provider is None:
                problems.append(
                    (
                        f"{path}.provider",
                        f"unknown provider '{route.provider}'; declared: {', '.join(sorted(providers))}",
                    )
                )
                continue
            if provider.type == "gcp_vertex" and not re.fullmatch(
                r"[a-z0-9-]+/[A-Za-z0-9._@-]+", route.upstream_model
            ):
                problems.append(
                    (
                        f"{path}.upstream_model",
                        f"Vertex routes must name <publisher>/<model_id> (e.g. google/gemini-2.0-flash); "
                        f"got '{route.upstream_model}'",
                    )
                )
    granted = seen_models
    for si, account in enumerate(settings.service_accounts):
        for ki, key in enumerate(account.keys):
            if isinstance(key.models, list):
                for model_name in key.models:
                    if model_name not in granted:
                        problems.append(
                            (
                                f"service_accounts[{si}].keys[{ki}].models",
                                f"grants unknown model '{model_name}'",
                            )
                        )
    if settings.response_cache.store == "redis" and settings.rate_limits.redis_url is None:
        problems.append(("response_cache.store", "'redis' needs rate_limits.redis_url (the gateway's Redis)"))
    from gateway_app.pricing import unknown_pricing_ids  # late: pricing imports config types

    for pi, provider_id in unknown_pricing_ids(settings):
        problems.append(
            (f"providers[{pi}].pricing_provider_id", f"'{provider_id}' is not in the bundled pricing catalog")
        )
    return problems


def _endpoint_checks(settings: GatewaySettings) -> list[tuple[str, str]]:
    """Regional endpoints: openai_compat only, instead of base_url, one per region."""
    problems: list[tuple[str, str]] = []
    for pi, provider in enumerate(settings.providers):
        if provider.endpoints is None:
            continue
        path = f"providers[{pi}].endpoints"
        if provider.type != "openai_compat":
            problems.append((path, f"only openai_compat providers take endpoints, not {provider.type}"))
        if provider.base_url:
            problems.append((path, "give either base_url or endpoints, not both"))
        seen: dict[str, int] = {}
        for ei, endpoint in enumerate(provider.endpoints):
            if endpoint.region in seen:
                problems.append(
                    (
                        f"{path}[{ei}].region",
                        f"region '{endpoint.region}' is already used by {path}[{seen[endpoint.region]}]",
                    )
                )
            seen.setdefault(endpoint.region, ei)
    return problems


def _secret_fields(node: Any, path: str):
    """Yield (path, SecretRef) for every secret reference in the settings tree."""
    if isinstance(node, SecretRef):
        yield path, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _secret_fields(getattr(node, name), f"{path}.{name}" if path else name)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _secret_fields(item, f"{path}[{i}]")


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "literal", "list", "str") or "[" in str(part):
            continue  # pydantic union/validator branch names, not fields
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def parse_settings(
    data: Any, source: str = "<memory>", environ: dict[str, str] | os._Environ[str] = os.environ
) -> GatewaySettings:
    if not isinstance(data, dict):
        raise ConfigError(source, [("(top level)", "must be a mapping of sections")])
    try:
        settings = GatewaySettings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            problems.append((_loc_to_path(err["loc"]), message))
        raise ConfigError(source, problems) from None
    problems = _cross_checks(settings)
    for path, ref in _secret_fields(settings, ""):
        try:
            ref.resolve(environ)
        except ValueError as exc:
            problems.append((path, str(exc)))
    if problems:
        raise ConfigError(source, problems)
    return settings


def config_path(explicit: str | None) -> Path:
    chosen = explicit or os.environ.get(CONFIG_ENV_VAR)
    if not chosen:
        raise ConfigError(
            "(none)", [("(config)", f"no config file: pass --config PATH or set {CONFIG_ENV_VAR}")]
        )
    return Path(chosen)


def load_settings(explicit: str | None = None) -> GatewaySettings:
    path = config_path(explicit)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(str(path), [("(file)", f"cannot be read: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError(str(path), [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_settings(data, str(path))
