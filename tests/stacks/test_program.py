"""The whole program per stack under mocks: HA, probes, security, secrets, ordering, RDS."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml
from pulumi.runtime import rpc

from gateway_app.config import parse_settings as parse_gateway_config
from stacks.components.network import NAMESPACE_LABEL
from stacks.offline import REDACTED, OfflineRun, run_stack, stack_file
from stacks.policy.validators import RESOURCE_CHECKS, STACK_CHECKS, Resource
from stacks.settings import GatewayAppSettings
from tests.stacks.conftest import STACKS, gateway_config, raw_settings, secret_values

_REFERENCES = (
    "GATEWAY_DATABASE_URL",
    "GATEWAY_BOOTSTRAP_ADMIN_PASSWORD",
    "GATEWAY_SEED_KEY",
    "OPENAI_API_KEY",
    "VLLM_API_KEY",
)
SEED_KEY = re.compile(r"^gwk_[a-z0-9]{12}\.[A-Za-z0-9]{40}$")


def deployment_pod(run: OfflineRun) -> dict:
    return run.one("Deployment").values["spec"]["template"]["spec"]


@pytest.mark.parametrize("stack", STACKS)
def test_all_policies_hold(runs: dict[str, OfflineRun], stack: str) -> None:
    resources = [
        Resource(r.type, r.name, r.values, r.urn, frozenset(r.dependencies)) for r in runs[stack].resources
    ]
    violations = [
        f"{c.name} {r.name}: {m}" for c in RESOURCE_CHECKS for r in resources for m in c.validate(r)
    ]
    violations += [f"{c.name}: {m}" for c in STACK_CHECKS for m in c.validate(resources)]
    assert violations == []


@pytest.mark.parametrize("stack", STACKS)
def test_deployment_probes_and_drain(runs: dict[str, OfflineRun], stack: str) -> None:
    pod = deployment_pod(runs[stack])
    container = pod["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["args"] == ["serve", "--config", "/etc/gateway/config.yaml"]
    grace = gateway_config(runs[stack])["server"]["shutdown_grace_seconds"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > grace + pre_stop


@pytest.mark.parametrize("stack", STACKS)
def test_pods_are_locked_down(runs: dict[str, OfflineRun], stack: str) -> None:
    for workload in runs[stack].by_type("Deployment") + runs[stack].by_type("Job"):
        pod = workload.values["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        context = pod["containers"][0]["securityContext"]
        assert context["runAsUser"] == 10001 and context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]
    namespace = runs[stack].one("Namespace").values["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("stack", STACKS)
def test_rollout_follows_config(runs: dict[str, OfflineRun], stack: str) -> None:
    run = runs[stack]
    spec = run.one("Deployment").values["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    data = run.one("ConfigMap", "llm-gateway-gateway-config").values["data"]["config.yaml"]
    assert (
        spec["template"]["metadata"]["annotations"]["checksum/config"]
        == hashlib.sha256(data.encode()).hexdigest()
    )


@pytest.mark.parametrize("stack", STACKS)
def test_migration_job_completes_before_the_rollout(runs: dict[str, OfflineRun], stack: str) -> None:
    run = runs[stack]
    migrate = run.one("Job", "llm-gateway-gateway-migrate-job")
    assert migrate.values["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["migrate", "--apply"]
    assert "ttlSecondsAfterFinished" not in migrate.values["spec"]
    assert migrate.urn in run.one("Deployment").dependencies
    for one_off in (
        run.one("Job", "llm-gateway-gateway-bootstrap-admin-job"),
        run.one("Job", "llm-gateway-gateway-seed-job"),
    ):
        assert migrate.urn in one_off.dependencies
        assert one_off.values["spec"]["ttlSecondsAfterFinished"] >= 60


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_config_is_valid_and_holds_only_references(runs: dict[str, OfflineRun], stack: str) -> None:
    run = runs[stack]
    config = gateway_config(run)
    settings = parse_gateway_config(config, f"{stack} ConfigMap", environ=dict.fromkeys(_REFERENCES, "dummy"))
    assert settings.database.url.ref == "env.GATEWAY_DATABASE_URL"
    assert settings.database.migrations == "check"
    assert settings.service_accounts[0].keys[0].secret.ref == "env.GATEWAY_SEED_KEY"
    configmap_text = json.dumps([r.values for r in run.by_type("ConfigMap")])
    for name, value in secret_values(run).items():
        assert value not in configmap_text, name


@pytest.mark.parametrize("stack", STACKS)
def test_generated_secrets_are_secret_everywhere(runs: dict[str, OfflineRun], stack: str) -> None:
    run = runs[stack]
    values = secret_values(run)
    assert SEED_KEY.match(values["GATEWAY_SEED_KEY"])
    assert values["GATEWAY_DATABASE_URL"].startswith("postgresql://gateway:")
    public_id = run.one("RandomString", "llm-gateway-secrets-seed-key-public-id").values
    assert (public_id["length"], public_id["special"], public_id["upper"]) == (12, False, False)
    for resource in run.resources:
        text = json.dumps(resource.inputs)
        assert not [name for name, value in values.items() if value in text], resource.name
    outputs = json.dumps({name: out.value for name, out in run.stack_outputs.items()})
    assert not any(out.secret for out in run.stack_outputs.values())
    assert not [name for name, value in values.items() if value in outputs]
    for urn, registered in run.component_outputs.items():
        plain = json.dumps({k: v for k, v in registered.items() if not rpc.is_rpc_secret(v)}, default=str)
        assert not [name for name, value in values.items() if value in plain], urn
    database_outputs = next(
        out for urn, out in run.component_outputs.items() if urn.endswith("::llm-gateway-database")
    )
    assert rpc.is_rpc_secret(database_outputs["url"])


@pytest.mark.parametrize("stack", STACKS)
def test_generated_strings_are_secret_in_state(runs: dict[str, OfflineRun], stack: str) -> None:
    """RandomString (unlike RandomPassword) keeps its result in plain state unless marked secret."""
    generated = runs[stack].by_type("RandomString")
    assert {r.name for r in generated} == {
        "llm-gateway-secrets-seed-key-public-id",
        "llm-gateway-secrets-seed-key-secret",
    }
    for resource in generated:
        assert "result" in resource.secret_outputs, resource.name


@pytest.mark.parametrize("stack", STACKS)
def test_gateway_trusts_the_ingress_for_client_addresses(runs: dict[str, OfflineRun], stack: str) -> None:
    config = gateway_config(runs[stack])
    default = GatewayAppSettings.model_fields["trusted_proxies"].default
    assert config["server"]["trusted_proxies"] == default and "10.0.0.0/8" in default
    # Only the ingress controller's namespace (and monitoring) may connect, so only it can claim them.
    sources = (
        runs[stack].one("NetworkPolicy", "llm-gateway-network-policy").values["spec"]["ingress"][0]["from"]
    )
    assert {"namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: "ingress-nginx"}}} in sources


def test_trusted_proxies_are_a_stack_setting() -> None:
    gateway = raw_settings("local")["gateway"]
    run = run_stack("local", overrides={"gateway": {**gateway, "trustedProxies": ["10.244.0.0/16"]}})
    config = gateway_config(run)
    assert config["server"]["trusted_proxies"] == ["10.244.0.0/16"]
    parsed = parse_gateway_config(config, "local ConfigMap", environ=dict.fromkeys(_REFERENCES, "dummy"))
    assert parsed.server.trusted_proxies == ["10.244.0.0/16"]


def test_local_is_one_replica_with_in_cluster_database(runs: dict[str, OfflineRun]) -> None:
    run = runs["local"]
    assert run.one("Deployment").values["spec"]["replicas"] == 1
    assert not run.by_type("HorizontalPodAutoscaler") and not run.by_type("PodDisruptionBudget")
    postgres = run.one("StatefulSet", "llm-gateway-database-postgres").values["spec"]
    assert postgres["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert run.one("Secret", "llm-gateway-database-postgres-credentials").inputs["stringData"] == REDACTED
    assert secret_values(run)["GATEWAY_DATABASE_URL"].endswith(
        "@llm-gateway-postgres.llm-gateway.svc.cluster.local:5432/gateway"
    )


def test_prod_high_availability(runs: dict[str, OfflineRun]) -> None:
    run = runs["prod"]
    hpa = run.one("HorizontalPodAutoscaler").values["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 12)
    assert hpa["behavior"]["scaleDown"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 60}]
    deployment = run.one("Deployment").values["spec"]
    assert "replicas" not in deployment  # the HPA owns the count
    pdb = run.one("PodDisruptionBudget").values["spec"]
    assert pdb["maxUnavailable"] == 1 and pdb["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert pdb["selector"]["matchLabels"] == deployment["selector"]["matchLabels"]
    pod = deployment["template"]["spec"]
    zone, node = pod["topologySpreadConstraints"]
    assert (zone["topologyKey"], zone["whenUnsatisfiable"], zone["minDomains"]) == (
        "topology.kubernetes.io/zone",
        "DoNotSchedule",
        3,
    )
    assert node["topologyKey"] == "kubernetes.io/hostname"
    assert pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pod["priorityClassName"] == run.one("PriorityClass").values["metadata"]["name"]
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "llm-gateway", "effect": "NoSchedule"}
    ]
    assert pod["nodeSelector"] == {"node.kubernetes.io/pool": "gateway"}
    account = run.one("ServiceAccount").values["metadata"]["annotations"]
    assert account == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/llm-gateway-prod"}


def test_prod_rds(runs: dict[str, OfflineRun]) -> None:
    run = runs["prod"]
    rds = run.one("rds/instance:Instance")
    assert rds.values["multiAz"] is True and rds.values["deletionProtection"] is True
    assert rds.values["storageEncrypted"] is True and rds.values["publiclyAccessible"] is False
    assert rds.values["backupRetentionPeriod"] == 14
    assert (rds.values["skipFinalSnapshot"], rds.values["finalSnapshotIdentifier"]) == (
        False,
        "llm-gateway-prod-final",
    )
    assert rds.inputs["password"] == REDACTED
    ingress = run.one("ec2/securityGroup:SecurityGroup").values["ingress"]
    assert [(r["fromPort"], r["toPort"], r["securityGroups"], r.get("cidrBlocks")) for r in ingress] == [
        (5432, 5432, ["sg-0a1b2c3d4e5f60099"], None)
    ]
    assert run.one("SecretVersion").inputs["secretString"] == REDACTED
    external = run.one("ExternalSecret").values["spec"]
    assert external["dataFrom"][1] == {"extract": {"key": "llm-gateway/prod/providers"}}
    assert (
        external["target"]["name"]
        == run.one("Deployment").values["spec"]["template"]["spec"]["containers"][0]["envFrom"][0][
            "secretRef"
        ]["name"]
    )


def test_rds_outside_production() -> None:
    database = yaml.safe_load(stack_file("prod").read_text())["config"]["llm-gateway:database"]
    del database["awsRds"]["backupRetentionDays"]
    rds = (
        run_stack("prod", overrides={"environment": "staging", "database": database})
        .one("rds/instance:Instance")
        .values
    )
    assert (rds["multiAz"], rds["deletionProtection"], rds["backupRetentionPeriod"]) == (False, False, 1)
    assert rds["skipFinalSnapshot"] is False and rds["applyImmediately"] is True


def test_staging_cloudnativepg_and_edges(runs: dict[str, OfflineRun]) -> None:
    run = runs["staging"]
    cluster = run.one("Cluster").values["spec"]
    assert cluster["instances"] == 2
    assert (
        cluster["bootstrap"]["initdb"]["secret"]["name"]
        == run.one("Secret", "llm-gateway-database-cnpg-app-credentials").values["metadata"]["name"]
    )
    ingress = run.one("Ingress").values["spec"]
    backends = [p["backend"]["service"]["name"] for r in ingress["rules"] for p in r["http"]["paths"]]
    assert backends == [run.one("Service", "llm-gateway-gateway-service").values["metadata"]["name"]]
    assert run.one("Service", "llm-gateway-gateway-service").values["spec"]["type"] == "ClusterIP"
    assert run.one("ServiceMonitor").values["spec"]["endpoints"][0]["path"] == "/metrics"


def test_network_policy(runs: dict[str, OfflineRun]) -> None:
    policy = runs["prod"].one("NetworkPolicy").values["spec"]
    sources = [
        s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in policy["ingress"]
        for s in rule["from"]
    ]
    assert sources == ["ingress-nginx", "monitoring"]
    egress = policy["egress"]
    assert egress[0]["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert [b["ipBlock"]["cidr"] for b in egress[1]["to"]] == [
        "10.20.64.0/20",
        "10.20.80.0/20",
        "10.20.96.0/20",
    ]
    destinations = {(json.dumps(r["to"], sort_keys=True), r["ports"][0]["port"]) for r in egress[2:]}
    assert destinations == {
        (
            json.dumps(
                [
                    {
                        "ipBlock": {
                            "cidr": "0.0.0.0/0",
                            "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
                        }
                    }
                ],
                sort_keys=True,
            ),
            443,
        ),
        (
            json.dumps(
                [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "inference"}}}]
            ),
            8000,
        ),
        (
            json.dumps(
                [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}}}]
            ),
            4318,
        ),
    }
    local = runs["local"].one("NetworkPolicy", "llm-gateway-network-policy").values["spec"]
    assert local["egress"][1]["to"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "llm-gateway-postgres",
                    "app.kubernetes.io/component": "database",
                }
            }
        }
    ]


def test_variant_digest_external_database_kubernetes_secrets(tmp_path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n- name: gateway\n  rules:\n  - alert: GatewayDown\n    expr: up == 0\n")
    digest = "sha256:" + "b" * 64
    run = run_stack(
        "staging",
        overrides={
            "imageTag": None,
            "imageDigest": digest,
            "database": {"kind": "external", "external": {"egressCidrs": ["10.9.0.0/16"], "port": 6432}},
            "secrets": {"backend": "kubernetes"},
            "observability": {"serviceMonitor": True, "prometheusRule": True, "alertRulesFile": str(rules)},
        },
        secrets={
            "databaseUrl": "postgresql://gw:pw@db.example.internal:6432/gw",
            "providerApiKeys": json.dumps({"OPENAI_API_KEY": "sk-test-openai-key-0000000000"}),
        },
    )
    container = deployment_pod(run)["containers"][0]
    assert (container["image"], container["imagePullPolicy"]) == (
        f"ghcr.io/example/llm-gateway@{digest}",
        "IfNotPresent",
    )
    values = run.one("Secret", "llm-gateway-secrets-env").values["stringData"]
    assert values["GATEWAY_DATABASE_URL"] == "postgresql://gw:pw@db.example.internal:6432/gw"
    assert values["OPENAI_API_KEY"] == "sk-test-openai-key-0000000000"
    assert not run.by_type("Cluster") and not run.by_type("ExternalSecret")
    assert run.one("PrometheusRule").values["spec"]["groups"][0]["rules"][0]["alert"] == "GatewayDown"
    egress = run.one("NetworkPolicy").values["spec"]["egress"][1]
    assert egress == {
        "to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 6432}],
    }


RUNBOOK_NAMES = [
    "deploy",
    "upgrade",
    "rollback",
    "migration_recovery",
    "admin_login_check",
    "provider_auth_check",
    "otlp_check",
    "purge_request_logs",
    "rotate_gateway_key",
    "rotate_admin_password",
    "rotate_provider_secret",
    "ha_check",
    "incident_error_rate",
    "db_maintenance",
    "backup",
    "restore",
    "cert_check",
    "health_report",
    "restart",
]
RUNBOOK_PLAYBOOKS = {f"playbooks/{name}.yml" for name in RUNBOOK_NAMES}


def test_prod_and_staging_deploy_every_alert_with_its_playbook(runs) -> None:
    shipped = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "gateway_app/alerts/rules.yml").read_text()
    )
    shipped_alerts = {r["alert"] for g in shipped["groups"] for r in g["rules"] if "alert" in r}
    for stack in ("prod", "staging"):
        rule = runs[stack].one("PrometheusRule").values
        deployed = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
        assert {r["alert"] for r in deployed} == shipped_alerts
        for alert in deployed:
            assert alert["annotations"]["playbook"] in RUNBOOK_PLAYBOOKS, alert["alert"]


def test_prod_and_staging_ship_the_grafana_dashboard_for_the_sidecar(runs) -> None:
    shipped = json.loads(
        (Path(__file__).resolve().parents[2] / "gateway_app/dashboards/gateway.json").read_text()
    )
    for stack in ("prod", "staging"):
        config_map = runs[stack].one("ConfigMap", "llm-gateway-observability-grafana-dashboard").values
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(config_map["data"]["llm-gateway.json"]) == shipped
    assert not [
        r
        for r in runs["local"].by_type("ConfigMap")
        if r.name == "llm-gateway-observability-grafana-dashboard"
    ]


# Every (type, name) the program declared before components named their children after
# themselves: the state of existing stacks holds these, and aliases must map onto them.
STATE_NAMES_BEFORE_COMPONENT_SCOPED_NAMES = {
    ("Cluster", "cnpg-cluster"),
    ("ConfigMap", "gateway-config"),
    ("ConfigMap", "observability-grafana-dashboard"),
    ("Database", "database"),
    ("Deployment", "gateway-deployment"),
    ("ExternalSecret", "gateway-env-external-secret"),
    ("Gateway", "gateway"),
    ("GatewayEnvironment", "llm-gateway"),
    ("GatewayNetwork", "network"),
    ("GatewaySecrets", "secrets"),
    ("HighAvailability", "availability"),
    ("HorizontalPodAutoscaler", "gateway-hpa"),
    ("Ingress", "gateway-ingress"),
    ("Instance", "rds-instance"),
    ("Job", "bootstrap-admin-job"),
    ("Job", "migrate-job"),
    ("Job", "seed-job"),
    ("Namespace", "namespace"),
    ("NetworkPolicy", "gateway-network-policy"),
    ("NetworkPolicy", "postgres-network-policy"),
    ("Observability", "observability"),
    ("PodDisruptionBudget", "gateway-pdb"),
    ("PriorityClass", "priority-class"),
    ("PrometheusRule", "gateway-prometheus-rule"),
    ("RandomPassword", "bootstrap-admin-password"),
    ("RandomPassword", "cnpg-app-password"),
    ("RandomPassword", "encryption-key"),
    ("RandomPassword", "postgres-password"),
    ("RandomPassword", "rds-master-password"),
    ("RandomString", "seed-key-public-id"),
    ("RandomString", "seed-key-secret"),
    ("Secret", "cnpg-app-credentials"),
    ("Secret", "gateway-env"),
    ("Secret", "gateway-env-secret"),
    ("Secret", "postgres-credentials"),
    ("SecretVersion", "gateway-env-secret-version"),
    ("SecurityGroup", "rds-security-group"),
    ("Service", "gateway-service"),
    ("Service", "postgres-service"),
    ("ServiceAccount", "gateway-service-account"),
    ("ServiceMonitor", "gateway-service-monitor"),
    ("StatefulSet", "postgres"),
    ("SubnetGroup", "rds-subnets"),
}


def test_existing_stacks_keep_their_resources_through_aliases(runs: dict[str, OfflineRun]) -> None:
    """Each renamed resource aliases its old name: `pulumi up` renames in place, replaces nothing."""
    declared = set()
    for run in runs.values():
        for resource in run.resources:
            kind = resource.type.split(":")[-1]
            if resource.name == "llm-gateway":
                assert resource.alias_names == ()
                declared.add((kind, resource.name))
                continue
            assert resource.name.startswith("llm-gateway-"), resource.name
            assert len(resource.alias_names) == 1, resource.name
            declared.add((kind, resource.alias_names[0]))
    assert declared == STATE_NAMES_BEFORE_COMPONENT_SCOPED_NAMES
