"""Every bad combination of settings is refused before any resource exists, naming key and fix."""

from __future__ import annotations

import copy
from typing import Any, get_args

import pytest
from pydantic import Field, create_model

from gateway_app import config as gateway_schema
from stacks.offline import run_stack
from stacks.settings import SettingsError, parse_settings
from tests.stacks.conftest import STACKS, raw_settings

PROD_SECRETS: dict[str, str] = {}


def problems_of(raw: dict[str, Any], stack: str = "prod", secrets: dict[str, str] | None = None) -> list:
    with pytest.raises(SettingsError) as refused:
        parse_settings(raw, stack, secrets or {})
    return refused.value.problems


def only_problem(raw: dict[str, Any], stack: str = "prod", secrets: dict[str, str] | None = None):
    problems = problems_of(raw, stack, secrets)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


@pytest.mark.parametrize("stack", STACKS)
def test_stack_files_are_valid(stack: str) -> None:
    settings = parse_settings(raw_settings(stack), stack)
    assert settings.environment == stack


def test_missing_required_key_names_key_and_command() -> None:
    raw = raw_settings("local")
    del raw["image"]
    problem = only_problem(raw, "local")
    assert problem.key == "image"
    assert problem.message == "Field required"
    assert problem.fix.startswith("pulumi config set image ")


def test_wrong_type_names_path_and_bound() -> None:
    raw = raw_settings("local")
    raw["scheduling"]["replicas"] = 0
    problem = only_problem(raw, "local")
    assert problem.key == "scheduling.replicas"
    assert problem.fix == "pulumi config set --path 'scheduling.replicas' <number >= 1>"


def test_misspelled_setting_is_refused() -> None:
    raw = raw_settings("local")
    raw["scheduling"]["replica"] = 2
    problem = only_problem(raw, "local")
    assert (problem.key, problem.message) == ("scheduling.replica", "unknown setting")
    assert problem.fix.startswith("pulumi config rm --path 'scheduling.replica'")


def test_unknown_literal_lists_the_choices() -> None:
    raw = raw_settings("local")
    raw["database"]["kind"] = "mysql"
    problem = only_problem(raw, "local")
    assert problem.fix == (
        "pulumi config set --path 'database.kind' <in_cluster|cloudnativepg|aws_rds|external>"
    )


@pytest.mark.parametrize(
    ("tag", "digest", "message"),
    [
        (None, None, "pin the image by exactly one of imageTag or imageDigest"),
        ("1.0.0", "sha256:" + "a" * 64, "pin the image by exactly one of imageTag or imageDigest"),
        ("latest", None, "'latest' moves; pin a release or a digest"),
    ],
)
def test_image_must_be_pinned_once(tag: str | None, digest: str | None, message: str) -> None:
    raw = raw_settings("local")
    raw.pop("imageTag")
    raw |= {k: v for k, v in (("imageTag", tag), ("imageDigest", digest)) if v}
    assert only_problem(raw, "local").message == message


def test_do_not_schedule_across_more_zones_than_declared() -> None:
    raw = raw_settings("prod")
    raw["environment"] = "staging"  # production also demands 3 zones; isolate the spread rule
    raw["scheduling"]["nodePools"][0]["zones"] = ["us-east-1a", "us-east-1b"]
    problem = only_problem(raw)
    assert problem.key == "scheduling.minZones"
    assert problem.message == (
        "zoneSpread DoNotSchedule across 3 zones, but pool 'gateway' declares 2 (us-east-1a, us-east-1b): "
        "with maxSkew 1 at most one pod per zone can schedule, 2 in total, and a rollout needs "
        "13 pods (12 replicas + maxSurge 1)"
    )
    assert problem.fix == "pulumi config set --path 'scheduling.minZones' 2"


def test_production_needs_three_zones() -> None:
    raw = raw_settings("prod")
    raw["scheduling"]["nodePools"][0]["zones"] = ["us-east-1a", "us-east-1b"]
    keys = {p.key for p in problems_of(raw)}
    assert keys == {"scheduling.nodePools[0].zones", "scheduling.minZones"}


def test_required_anti_affinity_needs_a_node_per_pod() -> None:
    raw = raw_settings("prod")
    raw["scheduling"] |= {"podAntiAffinity": "required", "zoneSpread": "ScheduleAnyway"}
    del raw["scheduling"]["minZones"]
    problem = only_problem(raw)
    assert problem.message == (
        "13 pods (12 replicas + maxSurge 1) cannot fit pool 'gateway': 9 nodes and "
        "required pod anti-affinity allows one pod per node"
    )
    assert problem.fix == "pulumi config set --path 'scheduling.nodePools[0].nodesPerZone' 5"


def test_zone_capacity_under_do_not_schedule() -> None:
    raw = raw_settings("prod")
    raw["scheduling"]["nodePools"][0] |= {"nodesPerZone": 1, "allocatableCpu": "2"}
    problem = only_problem(raw)
    assert problem.key == "scheduling.nodePools"
    assert problem.message == (
        "zoneSpread DoNotSchedule puts 5 of 13 pods (12 replicas + maxSurge 1) in each "
        "of 3 zones, but a zone of pool 'gateway' holds 4 (1 nodes x 4 pods)"
    )
    assert problem.fix == "pulumi config set --path 'scheduling.nodePools[0].nodesPerZone' 2"


def test_pod_larger_than_a_node() -> None:
    raw = raw_settings("prod")
    raw["gateway"]["resources"]["requests"]["cpu"] = "8"
    problem = only_problem(raw)
    assert problem.key == "gateway.resources.requests"
    assert "does not fit a 'gateway' node (3920m CPU, 14Gi allocatable)" in problem.message


def test_replicas_and_autoscaling_are_exclusive() -> None:
    raw = raw_settings("prod")
    raw["scheduling"]["replicas"] = 3
    assert only_problem(raw).fix == "pulumi config rm --path 'scheduling.replicas'"


def test_autoscaling_bounds() -> None:
    raw = raw_settings("prod")
    raw["scheduling"]["autoscaling"]["maxReplicas"] = 2
    problem = only_problem(raw)
    assert problem.fix == "pulumi config set --path 'scheduling.autoscaling.maxReplicas' 3"


def test_budget_that_protects_nothing() -> None:
    raw = raw_settings("prod")
    raw["scheduling"]["pdbMaxUnavailable"] = 3
    problem = only_problem(raw)
    assert problem.key == "scheduling.pdbMaxUnavailable"
    assert problem.fix == "pulumi config set --path 'scheduling.pdbMaxUnavailable' 2"


def test_budget_never_blocks_all_evictions() -> None:
    raw = raw_settings("prod")
    raw["scheduling"]["pdbMaxUnavailable"] = 0
    assert only_problem(raw).key == "scheduling.pdbMaxUnavailable"


def test_production_runs_three_replicas() -> None:
    raw = raw_settings("prod")
    raw["scheduling"]["autoscaling"]["minReplicas"] = 2
    assert only_problem(raw).message == "production runs at least 3 replicas, got 2"


def test_production_refuses_in_cluster_database() -> None:
    raw = raw_settings("prod")
    raw["database"] = {"kind": "in_cluster"}
    assert only_problem(raw).fix == "pulumi config set --path 'database.kind' aws_rds"


def test_production_backups() -> None:
    raw = raw_settings("prod")
    raw["database"]["awsRds"]["backupRetentionDays"] = 3
    assert only_problem(raw).key == "database.awsRds.backupRetentionDays"


def test_rds_needs_its_network() -> None:
    raw = raw_settings("prod")
    del raw["database"]["awsRds"]["clusterSecurityGroupId"]
    assert only_problem(raw).key == "database.awsRds.clusterSecurityGroupId"


def test_external_database_needs_url_secret() -> None:
    raw = raw_settings("local")
    raw["database"] = {"kind": "external", "external": {"egressCidrs": ["10.0.0.0/16"]}}
    problem = only_problem(raw, "local")
    assert problem.fix == ("pulumi config set --secret databaseUrl 'postgresql://USER:PASSWORD@HOST:5432/DB'")
    parse_settings(raw, "local", {"databaseUrl": "postgresql://u:p@db:5432/gw"})


def test_provider_keys_in_kubernetes_backend() -> None:
    raw = raw_settings("staging")
    raw["secrets"] = {"backend": "kubernetes"}
    problem = only_problem(raw, "staging")
    assert problem.fix == "pulumi config set --secret --path 'providerApiKeys.OPENAI_API_KEY' <api key>"
    parse_settings(raw, "staging", {"providerApiKeys": '{"OPENAI_API_KEY": "sk-test"}'})


def test_provider_keys_in_secrets_manager() -> None:
    raw = raw_settings("prod")
    del raw["secrets"]["providerKeysSecret"]
    problem = only_problem(raw)
    assert problem.key == "secrets.providerKeysSecret"
    assert "OPENAI_API_KEY, VLLM_API_KEY" in problem.message


def test_supplied_seed_key_format() -> None:
    problem = only_problem(raw_settings("local"), "local", {"seedKey": "gwk_short.key"})
    assert problem.fix == "pulumi config set --secret seedKey gwk_<public_id>.<secret>"
    parse_settings(raw_settings("local"), "local", {"seedKey": "gwk_" + "a1" * 6 + "." + "Ab9" * 13 + "x"})


def test_prometheus_rule_needs_the_rules_file() -> None:
    raw = raw_settings("prod")
    raw["observability"] |= {"prometheusRule": True, "alertRulesFile": "gateway_app/alerts/absent.yml"}
    problem = only_problem(raw)
    assert problem.message == (
        "gateway_app/alerts/absent.yml does not exist (yet): there are no alert rules to deploy"
    )
    assert problem.fix == "pulumi config set --path 'observability.prometheusRule' false"


def test_jobs_need_what_they_run() -> None:
    raw = raw_settings("local")
    del raw["gateway"]["bootstrapAdminEmail"]
    del raw["gateway"]["seedServiceAccount"]
    assert {p.key for p in problems_of(raw, "local")} == {
        "gateway.bootstrapAdminEmail",
        "gateway.seedServiceAccount",
    }


def test_routes_name_declared_providers() -> None:
    raw = raw_settings("local")
    raw["gateway"]["models"][0]["routes"][0]["provider"] = "openai"
    problem = only_problem(raw, "local")
    # The gateway's own cross check, not a copy of it in the stack settings.
    assert problem.key == "gateway"
    assert problem.message == (
        "the gateway refuses the config built from it: "
        "models[0].routes[0].provider: unknown provider 'openai'; declared: echo"
    )


def test_unknown_node_pool() -> None:
    raw = raw_settings("local")
    raw["scheduling"]["nodePool"] = "gpu"
    assert only_problem(raw, "local").fix == "pulumi config set --path 'scheduling.nodePool' local"


def test_every_problem_is_reported_at_once() -> None:
    raw = copy.deepcopy(raw_settings("prod"))
    raw["scheduling"]["autoscaling"]["minReplicas"] = 1
    raw["database"]["awsRds"]["backupRetentionDays"] = 2
    assert len(problems_of(raw)) == 2


def test_program_refuses_before_declaring_anything() -> None:
    with pytest.raises(SettingsError) as refused:
        run_stack("local", overrides={"imageTag": "latest"})
    assert "imageTag: 'latest' moves" in str(refused.value)
    assert "fix: pulumi config set imageDigest sha256:<digest>" in str(refused.value)


def test_the_gateway_checks_the_config_the_stack_builds() -> None:
    """Checks only the gateway knows (its bundled pricing catalog) refuse the stack's settings."""
    raw = raw_settings("staging")
    raw["gateway"]["providers"][1]["pricingProviderId"] = "no-such-catalog-entry"
    problem = only_problem(raw, "staging")
    assert problem.key == "gateway"
    assert "'no-such-catalog-entry' is not in the bundled pricing catalog" in problem.message


def _server_settings_with(drop: str, add: dict[str, Any]) -> type:
    fields: dict[str, Any] = {
        name: (info.annotation, info)
        for name, info in gateway_schema.ServerSettings.model_fields.items()
        if name != drop
    }
    fields.update(add)
    return create_model("ServerSettings", __base__=gateway_schema._Strict, **fields)


@pytest.mark.parametrize(
    ("drop", "add", "expected"),
    [
        # The gateway renames a field the stack sets: the stack's build is refused.
        ("access_log", {"access_logging": (bool, False)}, "ServerSettings.access_log: Extra inputs"),
        # The gateway gains a required field the stack does not know.
        ("", {"node_name": (str, Field(min_length=1))}, "ServerSettings.node_name: Field required"),
    ],
)
def test_stack_and_gateway_schema_cannot_drift(
    monkeypatch: pytest.MonkeyPatch, drop: str, add: dict[str, Any], expected: str
) -> None:
    monkeypatch.setattr(gateway_schema, "ServerSettings", _server_settings_with(drop, add))
    problem = only_problem(raw_settings("local"), "local")
    assert problem.key == "gateway" and expected in problem.message, problem.message


def test_gateway_fields_carry_the_gateway_constraints() -> None:
    """The stack settings that feed gateway config fields take their types from gateway_app.config."""
    raw = raw_settings("local")
    raw["gateway"] |= {"logLevel": "trace", "requestLoggingMode": "everything"}
    raw["gateway"]["providers"][0]["name"] = "Echo!"
    problems = {p.key: p for p in problems_of(raw, "local")}
    assert set(problems) == {"gateway.logLevel", "gateway.requestLoggingMode", "gateway.providers[0].name"}
    levels = "|".join(get_args(gateway_schema.ServerSettings.model_fields["log_level"].annotation))
    assert problems["gateway.logLevel"].fix == f"pulumi config set --path 'gateway.logLevel' <{levels}>"
    pattern = gateway_schema.ProviderSettings.model_fields["name"].metadata[0].pattern
    assert pattern in problems["gateway.providers[0].name"].message


def test_regional_endpoints_reach_the_gateway_config() -> None:
    from gateway_app.config import parse_settings as parse_gateway_config
    from stacks.gateway_config import render_gateway_config

    raw = copy.deepcopy(raw_settings("local"))
    endpoints = [
        {"region": "eu", "baseUrl": "https://eu.example.com/v1"},
        {"region": "us", "baseUrl": "https://us.example.com/v1"},
    ]
    raw["gateway"]["providers"].append(
        {"name": "multi", "type": "openai_compat", "pricingProviderId": "self_hosted", "endpoints": endpoints}
    )
    config = render_gateway_config(parse_settings(raw, "local").gateway)
    rendered = next(p for p in config["providers"] if p["name"] == "multi")
    assert (
        rendered["endpoints"]
        == [
            {"region": "eu", "base_url": "https://eu.example.com/v1"},
            {"region": "us", "base_url": "https://us.example.com/v1"},
        ]
        and "base_url" not in rendered
    )
    environ = {"GATEWAY_DATABASE_URL": "x", "GATEWAY_SEED_KEY": "x", "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD": "x"}
    settings = parse_gateway_config(config, "local ConfigMap", environ=environ)
    assert [e.region for e in next(p for p in settings.providers if p.name == "multi").endpoints or []] == [
        "eu",
        "us",
    ]
    raw["gateway"]["providers"][-1]["baseUrl"] = "https://x.example.com/v1"
    problem = only_problem(raw, "local")
    assert problem.key == "gateway" and "give either base_url or endpoints, not both" in problem.message
