"""Stack settings: read once from ``pulumi.Config``, validated into typed, frozen objects.

Every problem is reported before any resource is declared, with the config key and the
``pulumi config set`` command that fixes it. Validation is a pure function of the raw
config (``parse_settings``) so that it can be tested without the Pulumi runtime.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import pulumi
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from gateway_app import config as gateway

PROJECT = "llm-gateway"
REPO_ROOT = Path(__file__).resolve().parent.parent

# Structured (object) keys and plain string keys of the project namespace.
OBJECT_KEYS = ("database", "secrets", "gateway", "scheduling", "ingress", "observability", "jobs", "aws")
STRING_KEYS = ("environment", "namespace", "image", "imageTag", "imageDigest")
# Secret keys: optional values that replace generated ones or feed external systems.
SECRET_KEYS = ("databaseUrl", "providerApiKeys", "bootstrapAdminPassword", "seedKey", "encryptionKey")

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEMORY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_ENV_NAME = r"^[A-Z_][A-Z0-9_]*$"
_SEED_KEY = re.compile(r"^gwk_[a-z0-9]{12}\.[A-Za-z0-9]{40}$")


def cpu_millicores(quantity: str) -> int:
    match = _CPU.match(quantity)
    if not match:
        raise ValueError(f"'{quantity}' is not a CPU quantity like 250m or 2")
    value = float(match.group(1))
    return int(value if match.group(2) else value * 1000)


def memory_bytes(quantity: str) -> int:
    match = _MEMORY.match(quantity)
    if not match:
        raise ValueError(f"'{quantity}' is not a memory quantity like 512Mi or 4Gi")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]


def _valid_cpu(quantity: str) -> str:
    cpu_millicores(quantity)
    return quantity


def _valid_memory(quantity: str) -> str:
    memory_bytes(quantity)
    return quantity


def _valid_network(text: str) -> str:
    try:
        ipaddress.ip_network(text)
    except ValueError:
        raise ValueError(f"'{text}' is not an address or a CIDR like 10.0.0.0/8 (host bits 0)") from None
    return text


Cpu = Annotated[str, AfterValidator(_valid_cpu)]
IpNetwork = Annotated[str, AfterValidator(_valid_network)]
Memory = Annotated[str, AfterValidator(_valid_memory)]
DnsLabel = Annotated[str, Field(pattern=_DNS_LABEL, max_length=63)]


# --- fields of the gateway's own config ------------------------------------------------


def _gateway_field(model: type[BaseModel], name: str) -> Any:
    """A gateway config field's type with its constraints, for the stack setting that feeds it."""
    info = model.model_fields[name]
    return Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation


ProviderName = _gateway_field(gateway.ProviderSettings, "name")
ProviderTimeout = _gateway_field(gateway.ProviderSettings, "timeout_seconds")
RoutePriority = _gateway_field(gateway.RouteSettings, "priority")
RouteWeight = _gateway_field(gateway.RouteSettings, "weight")
EndpointRegion = _gateway_field(gateway.EndpointSettings, "region")
EndpointBaseUrl = _gateway_field(gateway.EndpointSettings, "base_url")
ModelName = _gateway_field(gateway.ModelSettings, "name")
ModelOperations = _gateway_field(gateway.ModelSettings, "operations")
ServiceAccountName = _gateway_field(gateway.ServiceAccountSettings, "name")
KeyModels = _gateway_field(gateway.SeedKeySettings, "models")
LogLevel = _gateway_field(gateway.ServerSettings, "log_level")
RequestTimeout = _gateway_field(gateway.ServerSettings, "request_timeout_seconds")
PoolSize = _gateway_field(gateway.DatabaseSettings, "pool_min")
LoggingMode = _gateway_field(gateway.RequestLoggingSettings, "mode")
PurgeRetention = _gateway_field(gateway.PurgeSettings, "retention")


class _Settings(BaseModel):
    # Stack files use camelCase like every Pulumi config; Python code uses snake_case.
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


# --- database ---------------------------------------------------------------------------


class InClusterDatabase(_Settings):
    image: str = "docker.io/library/postgres:15.8-bookworm"
    storage_size: Memory = "5Gi"
    storage_class: str | None = None
    cpu: Cpu = "250m"
    memory: Memory = "512Mi"


class CloudNativePgDatabase(_Settings):
    instances: int = Field(3, ge=1)
    storage_size: Memory = "20Gi"
    storage_class: str | None = None
    image_name: str = "ghcr.io/cloudnative-pg/postgresql:15.8"


class AwsRdsDatabase(_Settings):
    instance_class: str = "db.t4g.medium"
    engine_version: str = "15"
    allocated_storage_gb: int = Field(20, ge=20)
    max_allocated_storage_gb: int = Field(100, ge=20)
    # Defaults depend on the environment (see StackSettings); explicit values are checked against it.
    backup_retention_days: int | None = Field(None, ge=1, le=35)
    vpc_id: str
    subnet_ids: list[str] = Field(min_length=2)
    # The security group of the Kubernetes nodes: the only source allowed to reach the database.
    cluster_security_group_id: str
    # CIDRs of the database subnets, for the gateway's NetworkPolicy egress.
    egress_cidrs: list[str] = Field(min_length=1)
    kms_key_id: str | None = None

    @model_validator(mode="after")
    def _storage_bounds(self) -> AwsRdsDatabase:
        if self.max_allocated_storage_gb < self.allocated_storage_gb:
            raise ValueError("maxAllocatedStorageGb must be at least allocatedStorageGb")
        return self


class ExternalDatabase(_Settings):
    # CIDRs the database is reached at, for the gateway's NetworkPolicy egress.
    egress_cidrs: list[str] = Field(min_length=1)
    port: int = Field(5432, ge=1, le=65535)


class DatabaseSettings(_Settings):
    kind: Literal["in_cluster", "cloudnativepg", "aws_rds", "external"]
    name: DnsLabel = "gateway"
    user: DnsLabel = "gateway"
    in_cluster: InClusterDatabase = InClusterDatabase()
    cloudnativepg: CloudNativePgDatabase = CloudNativePgDatabase()
    aws_rds: AwsRdsDatabase | None = None
    external: ExternalDatabase | None = None

    @model_validator(mode="after")
    def _section_for_kind(self) -> DatabaseSettings:
        if self.kind == "aws_rds" and self.aws_rds is None:
            raise ValueError("kind aws_rds needs the awsRds section (vpcId, subnetIds, ...)")
        if self.kind == "external" and self.external is None:
            raise ValueError("kind external needs the external section (egressCidrs)")
        return self


# --- secrets ----------------------------------------------------------------------------


class SecretsSettings(_Settings):
    backend: Literal["kubernetes", "aws_secrets_manager"] = "kubernetes"
    # aws_secrets_manager: the external-secrets ClusterSecretStore that reads Secrets Manager.
    secret_store: str = "aws-secrets-manager"
    # aws_secrets_manager: an operator-managed secret (JSON object ENV_NAME -> value) with provider keys.
    provider_keys_secret: str | None = None
    refresh_interval: str = Field("1h", pattern=r"^\d+[smh]$")
    recovery_window_days: int = Field(7, ge=7, le=30)
    kms_key_id: str | None = None


# --- gateway application ----------------------------------------------------------------


class EndpointSpec(_Settings):
    region: EndpointRegion
    base_url: EndpointBaseUrl


class ProviderSpec(_Settings):
    name: ProviderName
    # A subset of the gateway's types: gcp_vertex needs credentials mounted as files.
    type: Literal["echo", "openai_compat"]
    enabled: bool = True
    base_url: str | None = None
    # Or regional base URLs, the faster healthy one preferred (docs/providers.md).
    endpoints: list[EndpointSpec] | None = Field(None, min_length=1)
    # Name of the environment variable holding the API key (value from the gateway Secret).
    api_key_env: str | None = Field(None, pattern=_ENV_NAME)
    pricing_provider_id: str | None = None
    timeout_seconds: ProviderTimeout = 60.0


class RouteSpec(_Settings):
    provider: str
    upstream_model: str
    priority: RoutePriority = 0
    weight: RouteWeight = 1
    enabled: bool = True


class ModelSpec(_Settings):
    name: ModelName
    operations: ModelOperations = ["chat"]
    routes: list[RouteSpec] = Field(min_length=1)


class SeedServiceAccount(_Settings):
    name: ServiceAccountName
    models: KeyModels = "all"
    daily_budget_usd: float | None = Field(None, ge=0)


class ResourceSpec(_Settings):
    cpu: Cpu
    memory: Memory


class Resources(_Settings):
    requests: ResourceSpec = ResourceSpec(cpu="250m", memory="256Mi")
    # No CPU limit by default: throttling hurts streaming latency more than it protects neighbours.
    cpu_limit: Cpu | None = None
    memory_limit: Memory = "512Mi"

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> Resources:
        if memory_bytes(self.memory_limit) < memory_bytes(self.requests.memory):
            raise ValueError("memoryLimit must be at least requests.memory")
        if self.cpu_limit and cpu_millicores(self.cpu_limit) < cpu_millicores(self.requests.cpu):
            raise ValueError("cpuLimit must be at least requests.cpu")
        return self


class GatewayAppSettings(_Settings):
    log_level: LogLevel = "info"
    access_log: bool = True
    shutdown_grace_seconds: int = Field(25, ge=1, le=600)
    request_timeout_seconds: RequestTimeout = 120.0
    pool_min: PoolSize = 2
    pool_max: PoolSize = 10
    otel_endpoint: str | None = None
    otel_metrics_endpoint: str | None = None
    providers: list[ProviderSpec] = Field(min_length=1)
    models: list[ModelSpec] = Field(min_length=1)
    # The bootstrap admin is enabled when an email is given; its password is generated or supplied.
    bootstrap_admin_email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")
    seed_service_account: SeedServiceAccount | None = None
    # Peers whose X-Forwarded-For/-Proto the gateway believes: the ingress controller's pods.
    # Private ranges by default, safe because the NetworkPolicy admits only the controller's
    # (and the monitoring) namespace; narrow it to the controller's pod CIDR where the CNI
    # does not enforce NetworkPolicy. Empty: every client is the connecting peer.
    trusted_proxies: list[IpNetwork] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"]
    request_logging_mode: LoggingMode = "summary_only"
    purge_retention: PurgeRetention | None = "7d"
    resources: Resources = Resources()

    @property
    def provider_key_envs(self) -> list[str]:
        return sorted({p.api_key_env for p in self.providers if p.api_key_env})


# --- scheduling -------------------------------------------------------------------------


class Taint(_Settings):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodePool(_Settings):
    name: DnsLabel
    zones: list[str] = Field(min_length=1)
    nodes_per_zone: int = Field(ge=1)
    allocatable_cpu: Cpu
    allocatable_memory: Memory
    # Labels that select the pool (nodeSelector) and taints the gateway must tolerate.
    labels: dict[str, str] = {}
    taints: list[Taint] = []


class Autoscaling(_Settings):
    min_replicas: int = Field(ge=1)
    max_replicas: int = Field(ge=1)
    target_cpu_utilization: int = Field(70, ge=10, le=100)
    scale_down_stabilization_seconds: int = Field(300, ge=0, le=3600)


class PriorityClassSpec(_Settings):
    name: DnsLabel
    value: int = Field(ge=0, le=1_000_000_000)


class SchedulingSettings(_Settings):
    replicas: int | None = Field(None, ge=1)
    autoscaling: Autoscaling | None = None
    node_pool: str
    node_pools: list[NodePool] = Field(min_length=1)
    zone_spread: Literal["DoNotSchedule", "ScheduleAnyway"] = "ScheduleAnyway"
    # minDomains of the zone spread: the number of zones the gateway must span.
    min_zones: int | None = Field(None, ge=1)
    node_spread: Literal["DoNotSchedule", "ScheduleAnyway"] = "ScheduleAnyway"
    pod_anti_affinity: Literal["required", "preferred"] = "preferred"
    priority_class: PriorityClassSpec | None = None
    pdb_max_unavailable: int = Field(1, ge=1)
    max_surge: int = Field(1, ge=1)

    @property
    def min_replicas(self) -> int:
        return self.autoscaling.min_replicas if self.autoscaling else self.replicas or 1

    @property
    def max_replicas(self) -> int:
        return self.autoscaling.max_replicas if self.autoscaling else self.replicas or 1

    @property
    def pool(self) -> NodePool:
        return next(p for p in self.node_pools if p.name == self.node_pool)


# --- edges ------------------------------------------------------------------------------


class IngressSettings(_Settings):
    enabled: bool = False
    host: str | None = None
    class_name: str = "nginx"
    tls_secret_name: str | None = None
    # Namespace of the ingress controller: the only in-cluster source allowed to reach the gateway.
    controller_namespace: DnsLabel = "ingress-nginx"

    @model_validator(mode="after")
    def _host_when_enabled(self) -> IngressSettings:
        if self.enabled and not self.host:
            raise ValueError("an enabled ingress needs host")
        return self


class ObservabilitySettings(_Settings):
    service_monitor: bool = False
    # Deploys the gateway's alert rules (package data of gateway_app) as a PrometheusRule, or the
    # operator's own rules file (a plain Prometheus rules file, relative to the project) instead.
    prometheus_rule: bool = False
    alert_rules_file: str | None = None
    # Ships the gateway's Grafana dashboard as a ConfigMap labelled for the Grafana sidecar.
    grafana_dashboard: bool = False
    monitoring_namespace: DnsLabel = "monitoring"

    @property
    def alert_rules_path(self) -> Path | None:
        return REPO_ROOT / self.alert_rules_file if self.alert_rules_file else None


class JobsSettings(_Settings):
    bootstrap_admin: bool = False
    seed: bool = False
    ttl_seconds_after_finished: int = Field(3600, ge=60)


class AwsSettings(_Settings):
    # IAM role for the gateway's ServiceAccount (IRSA); the pods get AWS credentials only through it.
    irsa_role_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:role/.+$")


# --- the stack --------------------------------------------------------------------------


class StackSettings(_Settings):
    environment: Literal["local", "staging", "prod"]
    namespace: DnsLabel = "llm-gateway"
    image: str = Field(pattern=r"^[a-z0-9.:/_-]+$")
    image_tag: str | None = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    image_digest: str | None = Field(None, pattern=r"^sha256:[a-f0-9]{64}$")
    database: DatabaseSettings
    secrets: SecretsSettings = SecretsSettings()
    gateway: GatewayAppSettings
    scheduling: SchedulingSettings
    ingress: IngressSettings = IngressSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    jobs: JobsSettings = JobsSettings()
    aws: AwsSettings = AwsSettings()

    @property
    def image_ref(self) -> str:
        return f"{self.image}@{self.image_digest}" if self.image_digest else f"{self.image}:{self.image_tag}"

    @property
    def production(self) -> bool:
        return self.environment == "prod"

    @property
    def backup_retention_days(self) -> int:
        explicit = self.database.aws_rds.backup_retention_days if self.database.aws_rds else None
        return explicit or (14 if self.production else 1)


def config_path(*fields: str) -> str:
    """The `pulumi config set --path` path of a settings field, from the models' own aliases.

    ``config_path("scheduling", "autoscaling", "min_replicas")`` is
    ``scheduling.autoscaling.minReplicas``; a field that does not exist raises KeyError,
    so a renamed field breaks here (and in its tests), not in a runbook.
    """
    model: Any = StackSettings
    parts = []
    for name in fields:
        field = model.model_fields[name]
        parts.append(field.alias or name)
        nested = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type)]
        model = next((t for t in nested if issubclass(t, BaseModel)), None)
    return ".".join(parts)


# What scale.yml sets on the kubernetes target (exported in the runbookTarget output):
# a fixed replica count, or the HPA's bounds when the stack autoscales.
REPLICAS_PATH = config_path("scheduling", "replicas")
MIN_REPLICAS_PATH = config_path("scheduling", "autoscaling", "min_replicas")
MAX_REPLICAS_PATH = config_path("scheduling", "autoscaling", "max_replicas")


@dataclass(frozen=True)
class SuppliedSecrets:
    """Secret config values; ``None`` where the program generates the value."""

    database_url: pulumi.Output[str] | None = None
    provider_api_keys: pulumi.Output[dict[str, str]] | None = None
    bootstrap_admin_password: pulumi.Output[str] | None = None
    seed_key: pulumi.Output[str] | None = None
    encryption_key: pulumi.Output[str] | None = None


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}\n    fix: {self.fix}"


class SettingsError(Exception):
    def __init__(self, stack: str, problems: list[Problem]):
        self.problems = problems
        lines = [f"stack '{stack}' has invalid settings ({len(problems)} problem(s)):"]
        lines += [f"  {problem}" for problem in problems]
        super().__init__("\n".join(lines))


def _set_command(path: str, value: str, secret: bool = False) -> str:
    flags = " --secret" if secret else ""
    if "." in path or "[" in path:
        return f"pulumi config set{flags} --path '{path}' {value}"
    return f"pulumi config set{flags} {path} {value}"


def _config_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "literal[", "list[")) or part in ("str", "int", "float", "bool"):
            continue  # pydantic branch names of unions and validators, not config fields
        else:
            path += f".{part}" if path else part
    return path


def _placeholder(error: dict[str, Any]) -> str:
    ctx = error.get("ctx", {})
    if error["type"] == "literal_error":
        return "<" + ctx["expected"].replace("'", "").replace(" or ", "|").replace(", ", "|") + ">"
    if "ge" in ctx:
        return f"<number >= {ctx['ge']}>"
    if "pattern" in ctx:
        return f"<value matching {ctx['pattern']}>"
    return "<value>"


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for error in exc.errors():
        path = _config_path(error["loc"]) or "(stack)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            parent = path.rsplit(".", 1)[0]
            problems.append(
                Problem(
                    path,
                    "unknown setting",
                    f"pulumi config rm --path '{path}'"
                    f"  # misspelled? see docs/pulumi.md for the fields of '{parent}'",
                )
            )
            continue
        problems.append(Problem(path, message, _set_command(path, _placeholder(error))))
    return problems


def _pods_per_node(settings: StackSettings) -> int:
    pool, requests = settings.scheduling.pool, settings.gateway.resources.requests
    by_cpu = cpu_millicores(pool.allocatable_cpu) // cpu_millicores(requests.cpu)
    by_memory = memory_bytes(pool.allocatable_memory) // memory_bytes(requests.memory)
    fit = min(by_cpu, by_memory)
    return min(fit, 1) if settings.scheduling.pod_anti_affinity == "required" else fit


def _scheduling_problems(settings: StackSettings) -> list[Problem]:
    """Refuse replica, spread and capacity combinations the declared node pools cannot schedule."""
    sched = settings.scheduling
    pool_names = [p.name for p in sched.node_pools]
    if sched.node_pool not in pool_names:
        return [
            Problem(
                "scheduling.nodePool",
                f"'{sched.node_pool}' is not a declared node pool ({', '.join(pool_names)})",
                _set_command("scheduling.nodePool", pool_names[0]),
            )
        ]
    problems: list[Problem] = []
    if sched.replicas is not None and sched.autoscaling is not None:
        problems.append(
            Problem(
                REPLICAS_PATH,
                "set either replicas or autoscaling, not both: the HPA owns the replica count",
                f"pulumi config rm --path '{REPLICAS_PATH}'",
            )
        )
    if sched.autoscaling and sched.autoscaling.min_replicas > sched.autoscaling.max_replicas:
        problems.append(
            Problem(
                MAX_REPLICAS_PATH,
                "must be at least minReplicas",
                _set_command(MAX_REPLICAS_PATH, str(sched.autoscaling.min_replicas)),
            )
        )
    if sched.min_replicas >= 2 and sched.pdb_max_unavailable >= sched.min_replicas:
        problems.append(
            Problem(
                "scheduling.pdbMaxUnavailable",
                f"{sched.pdb_max_unavailable} lets every one of the {sched.min_replicas} "
                "replicas be evicted at once: the budget would protect nothing",
                _set_command("scheduling.pdbMaxUnavailable", str(sched.min_replicas - 1)),
            )
        )
    if settings.production and sched.min_replicas < 3:
        problems.append(
            Problem(
                "scheduling.autoscaling.minReplicas",
                f"production runs at least 3 replicas, got {sched.min_replicas}",
                _set_command(MIN_REPLICAS_PATH, "3"),
            )
        )
    if sched.min_zones is not None and sched.zone_spread != "DoNotSchedule":
        problems.append(
            Problem(
                "scheduling.minZones",
                "minZones (minDomains) only applies with zoneSpread DoNotSchedule",
                _set_command("scheduling.zoneSpread", "DoNotSchedule"),
            )
        )
    pool = sched.pool
    zones = len(pool.zones)
    if settings.production and zones < 3:
        problems.append(
            Problem(
                f"scheduling.nodePools[{pool_names.index(pool.name)}].zones",
                f"production spreads across at least 3 zones; pool '{pool.name}' declares {zones}",
                _set_command(f"scheduling.nodePools[{pool_names.index(pool.name)}].zones[{zones}]", "<zone>"),
            )
        )
    per_node = _pods_per_node(settings)
    requests = settings.gateway.resources.requests
    if per_node == 0:
        return [
            *problems,
            Problem(
                "gateway.resources.requests",
                f"a pod requesting {requests.cpu} CPU and {requests.memory} does not fit a "
                f"'{pool.name}' node ({pool.allocatable_cpu} CPU, "
                f"{pool.allocatable_memory} allocatable)",
                _set_command("gateway.resources.requests.cpu", "<smaller quantity>"),
            ),
        ]
    # A rolling update at full scale runs maxReplicas + maxSurge pods at once.
    peak = sched.max_replicas + sched.max_surge
    peak_text = f"{peak} pods ({sched.max_replicas} replicas + maxSurge {sched.max_surge})"
    per_zone = per_node * pool.nodes_per_zone
    reported = len(problems)
    if sched.zone_spread == "DoNotSchedule":
        if sched.min_zones and sched.min_zones > zones:
            # Fewer eligible zones than minDomains: the global minimum counts as 0, so maxSkew 1
            # caps every zone at one pod.
            if peak > zones:
                problems.append(
                    Problem(
                        "scheduling.minZones",
                        f"zoneSpread DoNotSchedule across {sched.min_zones} zones, but pool '{pool.name}' "
                        f"declares {zones} ({', '.join(pool.zones)}): with maxSkew 1 at most one pod per "
                        f"zone can schedule, {zones} in total, and a rollout needs {peak_text}",
                        _set_command("scheduling.minZones", str(zones)),
                    )
                )
        elif math.ceil(peak / zones) > per_zone:
            problems.append(
                Problem(
                    "scheduling.nodePools",
                    f"zoneSpread DoNotSchedule puts {math.ceil(peak / zones)} of {peak_text} "
                    f"in each of {zones} zones, but a zone of pool '{pool.name}' holds {per_zone} "
                    f"({pool.nodes_per_zone} nodes x {per_node} pods)",
                    _set_command(
                        f"scheduling.nodePools[{pool_names.index(pool.name)}].nodesPerZone",
                        str(math.ceil(math.ceil(peak / zones) / per_node)),
                    ),
                )
            )
    nodes = zones * pool.nodes_per_zone
    if len(problems) > reported:
        return problems  # the zone rule already explains why the pods do not fit
    if peak > nodes * per_node:
        reason = (
            "required pod anti-affinity allows one pod per node"
            if (sched.pod_anti_affinity == "required")
            else f"{per_node} pods fit a node"
        )
        problems.append(
            Problem(
                "scheduling.nodePools",
                f"{peak_text} cannot fit pool '{pool.name}': {nodes} nodes and {reason}",
                _set_command(
                    f"scheduling.nodePools[{pool_names.index(pool.name)}].nodesPerZone",
                    str(math.ceil(peak / per_node / zones)),
                ),
            )
        )
    elif sched.node_spread == "DoNotSchedule" and math.ceil(peak / nodes) > per_node:
        problems.append(
            Problem(
                "scheduling.nodeSpread",
                f"nodeSpread DoNotSchedule needs {math.ceil(peak / nodes)} pods per node but {per_node} fit",
                _set_command("scheduling.nodeSpread", "ScheduleAnyway"),
            )
        )
    return problems


def _gateway_config_problems(app: GatewayAppSettings) -> list[Problem]:
    """What the gateway itself refuses in the config the stack builds (its own schema and checks)."""
    from gateway_app.config import ConfigError  # late: the gateway's schema, not repeated here
    from stacks.gateway_config import render_gateway_config  # late: it imports this module

    try:
        render_gateway_config(app)
    except ConfigError as exc:
        return [
            Problem(
                "gateway",
                f"the gateway refuses the config built from it: {path}: {message}",
                "pulumi config set --path 'gateway.<field>' <value>  # see docs/pulumi.md",
            )
            for path, message in exc.problems
        ]
    return []


def _stack_problems(settings: StackSettings, secret_values: Mapping[str, str]) -> list[Problem]:
    problems = _scheduling_problems(settings)
    problems += _gateway_config_problems(settings.gateway)
    if (settings.image_tag is None) == (settings.image_digest is None):
        problems.append(
            Problem(
                "imageTag",
                "pin the image by exactly one of imageTag or imageDigest",
                _set_command("imageTag", "<version>"),
            )
        )
    if settings.image_tag in ("latest", "main", "master"):
        problems.append(
            Problem(
                "imageTag",
                f"'{settings.image_tag}' moves; pin a release or a digest",
                _set_command("imageDigest", "sha256:<digest>"),
            )
        )
    if settings.database.kind == "external" and "databaseUrl" not in secret_values:
        problems.append(
            Problem(
                "databaseUrl",
                "database kind external reads the URL from this secret",
                _set_command("databaseUrl", "'postgresql://USER:PASSWORD@HOST:5432/DB'", True),
            )
        )
    if settings.production and settings.database.kind == "in_cluster":
        problems.append(
            Problem(
                "database.kind",
                "production needs a managed or replicated database, not a single in-cluster StatefulSet",
                _set_command("database.kind", "aws_rds"),
            )
        )
    if settings.production and settings.database.aws_rds and settings.backup_retention_days < 7:
        problems.append(
            Problem(
                "database.awsRds.backupRetentionDays",
                "production keeps at least 7 days of backups",
                _set_command("database.awsRds.backupRetentionDays", "14"),
            )
        )
    if "seedKey" in secret_values and not _SEED_KEY.match(secret_values["seedKey"]):
        problems.append(
            Problem(
                "seedKey",
                "must look like gwk_<12 chars a-z0-9>.<40 chars A-Za-z0-9>",
                _set_command("seedKey", "gwk_<public_id>.<secret>", True),
            )
        )
    provider_keys = settings.gateway.provider_key_envs
    if provider_keys and settings.secrets.backend == "kubernetes":
        supplied = _json_object(secret_values.get("providerApiKeys", "{}"))
        problems += [
            Problem(
                f"providerApiKeys.{env}",
                f"provider key {env} has no value",
                _set_command(f"providerApiKeys.{env}", "<api key>", True),
            )
            for env in provider_keys
            if not supplied.get(env)
        ]
    if (
        provider_keys
        and settings.secrets.backend == "aws_secrets_manager"
        and not (settings.secrets.provider_keys_secret)
    ):
        problems.append(
            Problem(
                "secrets.providerKeysSecret",
                f"provider keys ({', '.join(provider_keys)}) come "
                "from a Secrets Manager secret that this setting names",
                _set_command("secrets.providerKeysSecret", "llm-gateway/<stack>/providers"),
            )
        )
    rules = settings.observability
    if rules.prometheus_rule and rules.alert_rules_path and not rules.alert_rules_path.is_file():
        problems.append(
            Problem(
                "observability.prometheusRule",
                f"{rules.alert_rules_file} does not exist (yet): there are no alert rules to deploy",
                _set_command("observability.prometheusRule", "false"),
            )
        )
    if settings.jobs.bootstrap_admin and not settings.gateway.bootstrap_admin_email:
        problems.append(
            Problem(
                "gateway.bootstrapAdminEmail",
                "jobs.bootstrapAdmin needs a bootstrap admin",
                _set_command("gateway.bootstrapAdminEmail", "admin@example.com"),
            )
        )
    if settings.jobs.seed and not settings.gateway.seed_service_account:
        problems.append(
            Problem(
                "gateway.seedServiceAccount",
                "jobs.seed needs a seeded service account",
                _set_command("gateway.seedServiceAccount.name", "platform-smoke"),
            )
        )
    return problems


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def parse_settings(
    raw: dict[str, Any], stack: str, secret_values: Mapping[str, str] | None = None
) -> StackSettings:
    """Validate the raw config of a stack (and the shape of its secrets); raises SettingsError."""
    try:
        settings = StackSettings.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(stack, _pydantic_problems(exc)) from None
    problems = _stack_problems(settings, secret_values or {})
    if problems:
        raise SettingsError(stack, problems)
    return settings


def _raw_config(config: pulumi.Config) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for key in STRING_KEYS:
        value = config.get(key)
        if value is not None:
            raw[key] = value
    for key in OBJECT_KEYS:
        text = config.get(key)
        if text is not None:
            try:
                raw[key] = json.loads(text)
            except json.JSONDecodeError:
                raise SettingsError(
                    pulumi.get_stack(),
                    [
                        Problem(
                            key,
                            "must be an object",
                            f"edit stacks/Pulumi.{pulumi.get_stack()}.yaml: '{key}' is a mapping",
                        )
                    ],
                ) from None
    return raw


def load_settings() -> tuple[StackSettings, SuppliedSecrets]:
    """Read and validate the stack's config once; fails before any resource is declared."""
    config = pulumi.Config(PROJECT)
    # Secret values are read in plain only to validate their shape here; they leave as Output.secret.
    secret_values = {key: value for key in SECRET_KEYS if (value := config.get(key)) is not None}
    settings = parse_settings(_raw_config(config), pulumi.get_stack(), secret_values)

    def secret(key: str) -> pulumi.Output[Any] | None:
        if key not in secret_values:
            return None
        value = _json_object(secret_values[key]) if key == "providerApiKeys" else secret_values[key]
        return pulumi.Output.secret(value)

    supplied = SuppliedSecrets(
        database_url=secret("databaseUrl"),
        provider_api_keys=secret("providerApiKeys"),
        bootstrap_admin_password=secret("bootstrapAdminPassword"),
        seed_key=secret("seedKey"),
        encryption_key=secret("encryptionKey"),
    )
    return settings, supplied
