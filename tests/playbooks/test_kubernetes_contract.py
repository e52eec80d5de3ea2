"""Contract tests of the kubernetes target (not a cluster).

1. Static, per stack: render every stack (`python -m stacks render`) and check that
   every name the target reads from the stack's runbookTarget output exists in the
   rendered resources, that every `pulumi config set` key the target's tasks use is
   one the program reads, and that the target repeats no name of its own.
2. Runs: the target's real tasks run through ansible-playbook against a Kubernetes
   API double (tests/support/kube_api_double.py, serving what the real program
   renders) with a `pulumi` stand-in that records its arguments and runs the real
   program (tests/support/pulumi_standin.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stacks.offline import available_stacks
from stacks.settings import (
    MAX_REPLICAS_PATH,
    MIN_REPLICAS_PATH,
    OBJECT_KEYS,
    PROJECT,
    REPLICAS_PATH,
    SECRET_KEYS,
    STRING_KEYS,
)
from tests.support.kube_api_double import KubeApiDouble, KubeApiServer
from tests.support.processes import REPO, free_port

PLAYBOOKS = REPO / "playbooks"
TARGET = PLAYBOOKS / "roles" / "target_kubernetes"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
INVENTORY = PLAYBOOKS / "inventories" / "kubernetes-example"
PROGRAM_KEYS = {f"{PROJECT}:{key}" for key in (*STRING_KEYS, *OBJECT_KEYS, *SECRET_KEYS)}
STACK = "local"
NEW_TAG = "0.2.0"


# --- 1. names: the target against every rendered stack ------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("render")
    inventories = {}
    for stack in available_stacks():
        done = subprocess.run(
            [sys.executable, "-m", "stacks", "render", "--stack", stack, "--out", str(out / stack)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        inventories[stack] = json.loads((out / stack / "resources.json").read_text())
    return inventories


def _objects(inventory: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["inputs"] for r in inventory["resources"] if r["inputs"].get("kind") == kind]


def _named(inventory: dict[str, Any], kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    return next(
        (
            o
            for o in _objects(inventory, kind)
            if o["metadata"]["name"] == name and o["metadata"].get("namespace") == namespace
        ),
        None,
    )


def test_every_stack_is_rendered(rendered: dict[str, dict[str, Any]]) -> None:
    assert {"local", "staging", "prod"} <= set(rendered)


@pytest.mark.parametrize("stack", available_stacks())
def test_every_name_the_target_uses_exists_in_the_rendered_stack(
    rendered: dict[str, dict[str, Any]], stack: str
) -> None:
    inventory = rendered[stack]
    names = inventory["outputs"]["runbookTarget"]
    namespace = names["namespace"]
    assert _objects(inventory, "Namespace")[0]["metadata"]["name"] == namespace
    deployment = _named(inventory, "Deployment", namespace, names["deployment"])
    assert deployment, f"{stack}: no Deployment {namespace}/{names['deployment']}"
    template = deployment["spec"]["template"]
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    assert names["container"] in containers, (
        f"{stack}: container {names['container']} not in {sorted(containers)}"
    )
    container = containers[names["container"]]
    selector = dict(term.split("=", 1) for term in names["podSelector"].split(","))
    assert selector.items() <= template["metadata"]["labels"].items(), (
        f"{stack}: podSelector selects no gateway pod"
    )
    assert selector.items() <= deployment["spec"]["selector"]["matchLabels"].items()
    assert container["image"].rsplit(":", 1)[0] == names["imageRepository"] or container["image"].startswith(
        names["imageRepository"] + "@"
    )
    # The Secret the target reads and mounts: the one the gateway's pods read.
    assert {"secretRef": {"name": names["secret"]}} in container["envFrom"]
    secret = _named(inventory, "Secret", namespace, names["secret"]) or next(
        (o for o in _objects(inventory, "ExternalSecret") if o["spec"]["target"]["name"] == names["secret"]),
        None,
    )
    assert secret, f"{stack}: neither a Secret nor an ExternalSecret makes {names['secret']}"
    config_map = _named(inventory, "ConfigMap", namespace, names["configMap"])
    assert config_map and names["configMapKey"] in config_map["data"]
    assert any(m["mountPath"] == os.path.dirname(names["configPath"]) for m in container["volumeMounts"])
    service = _named(inventory, "Service", namespace, names["service"])
    assert service and any(p["port"] == names["servicePort"] for p in service["spec"]["ports"])


@pytest.mark.parametrize("stack", available_stacks())
def test_every_config_key_the_target_sets_is_one_the_program_reads(
    rendered: dict[str, dict[str, Any]], stack: str
) -> None:
    names = rendered[stack]["outputs"]["runbookTarget"]
    keys = [names["imageTagConfigKey"], names["providerKeysConfigKey"], *names["secretConfigKeys"].values()]
    assert set(keys) <= PROGRAM_KEYS, f"{stack}: keys the program does not read: {set(keys) - PROGRAM_KEYS}"


def _task_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((TARGET / "tasks").glob("*.yml"))}


def test_the_target_sets_config_keys_only_through_the_stack_output() -> None:
    """A literal key in `pulumi config set` (e.g. gateway:version) is one the program may not read."""
    for name, text in _task_files().items():
        for task in yaml.safe_load(text) or []:
            argv = str((task.get("ansible.builtin.command") or {}).get("argv", ""))
            if "config" in argv and "set" in argv:
                literal = [
                    k for k in re.findall(r"['\"]?([\w.-]+:[\w.]+)['\"]?", argv) if k not in ("k8s_names",)
                ]
                assert set(literal) <= PROGRAM_KEYS, (
                    f"{name}: `{task['name']}` sets {literal}, not read by the program"
                )
                assert "k8s_names." in argv, (
                    f"{name}: `{task['name']}` names its config key itself, not from the stack output"
                )


def test_the_target_repeats_no_name_of_the_stack(rendered: dict[str, dict[str, Any]]) -> None:
    """Nothing in defaults/ or tasks/ spells a name the program owns: they drift."""
    owned: set[str] = set()
    for inventory in rendered.values():
        names = inventory["outputs"]["runbookTarget"]
        owned |= {
            names["namespace"],
            names["deployment"],
            names["secret"],
            names["configMap"],
            names["imageRepository"],
        }
        owned |= {term.split("=", 1)[1] for term in names["podSelector"].split(",")}
    owned |= {"llm-gateway-secrets", "gateway:version"}  # the names of the bugs this test was written for
    for path in [
        *(TARGET / "tasks").glob("*.yml"),
        TARGET / "defaults" / "main.yml",
        INVENTORY / "group_vars" / "gateway.yml",
    ]:
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        spelled = sorted(name for name in owned if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", code))
        assert not spelled, (
            f"{path.relative_to(REPO)} spells {spelled}: read them from k8s_names (the stack output)"
        )


# --- 2. runs: the target's tasks against the API double and the pulumi stand-in -------------


class Cluster:
    """The API double on a free port, the pulumi stand-in on PATH, ansible-playbook runs."""

    def __init__(self, workdir: Path, double: KubeApiDouble, server: KubeApiServer):
        self.workdir, self.double, self.server = workdir, double, server
        self.state = workdir / "pulumi"
        self.state.mkdir()
        bin_dir = workdir / "bin"
        bin_dir.mkdir()
        self.pulumi = bin_dir / "pulumi"
        self.pulumi.write_text(f'#!/bin/sh\nexec {sys.executable} -m tests.support.pulumi_standin "$@"\n')
        self.pulumi.chmod(0o755)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PULUMI_STANDIN_DIR": str(self.state),
            "KUBE_DOUBLE_URL": server.url,
            "ANSIBLE_CONFIG": str(PLAYBOOKS / "ansible.cfg"),
            "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"),
            "ANSIBLE_FILTER_PLUGINS": str(PLAYBOOKS / "filter_plugins"),
            "ANSIBLE_NOCOLOR": "1",
            # The kubernetes client caches discovery per server: a fresh cache per double.
            "TMPDIR": str(workdir),
        }
        self.vars = {
            "pulumi_stack": STACK,
            "pulumi_bin": str(self.pulumi),
            "pulumi_cwd": str(REPO),
            "k8s_kubeconfig": str(server.kubeconfig),
            "k8s_backup_pvc": "gateway-backups",
            "k8s_poll_seconds": 1,
            "k8s_job_timeout": 5,
            "k8s_rollout_timeout": 10,
        }
        self._runs = 0

    def pulumi_calls(self) -> list[dict[str, Any]]:
        path = self.state / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def up(self) -> None:
        done = subprocess.run(
            [str(self.pulumi), "up", "--stack", STACK, "--yes"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr

    def playbook(self, playbook: Path | str, **extra: Any) -> subprocess.CompletedProcess:
        vars_file = self.workdir / f"vars-{self._runs}.json"
        self._runs += 1
        vars_file.write_text(json.dumps({**self.vars, **extra}))
        return subprocess.run(
            [str(ANSIBLE_PLAYBOOK), "-i", str(INVENTORY), str(playbook), "-e", f"@{vars_file}"],
            cwd=PLAYBOOKS,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    def entry(
        self, entry: str, publish: list[str], **extra: Any
    ) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
        """Run one entry point of the target as a runbook does; return the facts it publishes."""
        out = self.workdir / f"facts-{self._runs}.json"
        playbook = self.workdir / f"entry-{self._runs}.yml"
        playbook.write_text(
            yaml.safe_dump(
                [
                    {
                        "name": f"Contract: target_kubernetes {entry}",
                        "hosts": "gateway",
                        "gather_facts": False,
                        "tasks": [
                            {
                                "name": f"Run {entry}",
                                "ansible.builtin.include_role": {
                                    "name": "target_{{ gateway_target }}",
                                    "tasks_from": entry,
                                },
                            },
                            {
                                "name": "Publish the facts",
                                "delegate_to": "localhost",
                                "ansible.builtin.copy": {
                                    "dest": str(out),
                                    "mode": "0600",
                                    "content": "{{ {"
                                    + ", ".join(f"'{f}': {f} | default(none)" for f in publish)
                                    + "} | to_json }}",
                                },
                            },
                        ],
                    }
                ]
            )
        )
        done = self.playbook(playbook, **extra)
        return done, (json.loads(out.read_text()) if out.exists() else {})


def _cli_answers(container: dict[str, Any]) -> tuple[int, str]:
    """What the gateway image answers, by argv: the contract the runbooks rely on."""
    args = container.get("args") or []
    command = " ".join(args)
    if container.get("command") == ["bash", "-c"]:
        if "pg_dump" in command:
            return 0, f"sha256 {'ab' * 32} size 4096\n"
        if "ls -1tr" in command:
            return 0, "backup pre-upgrade-1\nbackup nightly\n"
        return 0, "ok\n"
    answers = {
        "migrate --check": (1, "pending: 0002_runbook_test (additive)\n"),
        "migrate --check --refuse": (2, "refuse: the schema is newer than this release\n"),
        "keys list --json": (3, "database unreachable\n"),
    }
    return answers.get(command, (0, f"{command}: done\n"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("kube-contract")
    double = KubeApiDouble(job_handler=_cli_answers)
    with KubeApiServer(double, free_port(), workdir) as server:
        running = Cluster(workdir, double, server)
        running.up()  # the stack as `pulumi up` leaves it: what the program renders, in the double
        yield running


def _names(cluster: Cluster) -> dict[str, Any]:
    done = subprocess.run(
        [str(cluster.pulumi), "stack", "output", "--json", "--stack", STACK],
        cwd=REPO,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(done.stdout)["runbookTarget"]


def test_a_pending_migration_answers_1_and_the_upgrade_proceeds(cluster: Cluster) -> None:
    done, facts = cluster.entry(
        "run_command",
        ["target_result"],
        target_command=["migrate", "--check"],
        target_release=NEW_TAG,
        target_ok_rc=[0, 1, 2],
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert facts["target_result"]["rc"] == 1 and "pending" in facts["target_result"]["stdout"]
    job = cluster.double.created("Job")[-1]
    container = job["spec"]["template"]["spec"]["containers"][0]
    names = _names(cluster)
    assert container["image"] == f"{names['imageRepository']}:{NEW_TAG}"
    assert container["args"] == ["migrate", "--check"]
    assert {"name": "GATEWAY_CONFIG", "value": names["configPath"]} in container["env"]
    assert {"secretRef": {"name": names["secret"]}} in container["envFrom"]


@pytest.mark.parametrize(
    ("command", "rc"), [(["migrate", "--check", "--refuse"], 2), (["keys", "list", "--json"], 3)]
)
def test_a_failed_job_yields_the_rc_the_cli_returned(cluster: Cluster, command: list[str], rc: int) -> None:
    done, facts = cluster.entry(
        "run_command", ["target_result"], target_command=command, target_ok_rc=[0, 1, 2, 3]
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert facts["target_result"]["rc"] == rc
    refused, _ = cluster.entry("run_command", ["target_result"], target_command=command)
    assert refused.returncode != 0 and f"exited {rc}" in refused.stdout


def test_change_version_sets_the_key_the_program_reads_and_the_pods_follow(cluster: Cluster) -> None:
    names = _names(cluster)
    done, facts = cluster.entry(
        "change_version", ["target_current_release", "target_previous_release"], release_version=NEW_TAG
    )
    assert done.returncode == 0, done.stdout[-3000:]
    sets = [c["argv"] for c in cluster.pulumi_calls() if c["argv"][:2] == ["config", "set"]]
    assert (
        sets[-1][-2:] == [names["imageTagConfigKey"], NEW_TAG] and names["imageTagConfigKey"] in PROGRAM_KEYS
    )
    deployment = cluster.double.get("Deployment", names["namespace"], names["deployment"])
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(f":{NEW_TAG}")
    assert facts["target_current_release"] == NEW_TAG and facts["target_previous_release"] == "0.1.0"


def test_the_backup_job_mounts_the_stacks_secret_and_passes_no_password(cluster: Cluster) -> None:
    before = len(cluster.double.created("Job"))
    done = cluster.playbook(PLAYBOOKS / "backup.yml", backup_name="contract")
    assert done.returncode == 0, done.stdout[-3000:]
    names = _names(cluster)
    job = cluster.double.created("Job")[before]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": names["secret"]}}]
    assert (
        job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        == "gateway-backups"
    )
    script = container["args"][0]
    assert 'pg_dump --format=custom --no-owner --file="$f" -d "$DATABASE_URL"' in script
    assert (
        "PGPASSWORD" in script
        and 'GATEWAY_DATABASE_URL"' not in script.split("unset GATEWAY_DATABASE_URL")[1]
    )
    assert f"Backup contract verified: sha256 {'ab' * 32}" in done.stdout
    listed = cluster.playbook(PLAYBOOKS / "backup.yml", list_only=True)
    assert listed.returncode == 0 and "pre-upgrade-1" in listed.stdout


def test_a_job_on_a_secret_the_stack_does_not_create_never_runs(cluster: Cluster) -> None:
    """What the backup Jobs did before (llm-gateway-secrets): the pod cannot start, the task says so."""
    names = _names(cluster)
    secret = cluster.double.objects.pop(("secrets", names["namespace"], names["secret"]))
    try:
        done, _ = cluster.entry("backup_database", ["backup_manifest"], backup_name="no-secret")
    finally:
        cluster.double.objects[("secrets", names["namespace"], names["secret"])] = secret
    assert done.returncode != 0 and "The backup Job exited -1" in done.stdout
    assert "its pod is CreateContainerConfigError" in done.stdout


def test_write_secrets_sends_values_on_stdin_and_the_pods_get_them(cluster: Cluster) -> None:
    new_key = "gwk_contract0001." + "A" * 40
    done, facts = cluster.entry(
        "write_secrets", ["gateway_secrets"], target_secret_updates={"GATEWAY_SEED_KEY": new_key}
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert new_key not in done.stdout + done.stderr
    names = _names(cluster)
    call = [c for c in cluster.pulumi_calls() if c["argv"][:2] == ["config", "set"]][-1]
    assert call["argv"][-1] == names["secretConfigKeys"]["GATEWAY_SEED_KEY"] and call["stdin"] is True
    assert new_key not in json.dumps(cluster.pulumi_calls())
    assert facts["gateway_secrets"]["GATEWAY_SEED_KEY"] == new_key  # the program put it in the Secret


def test_read_config_and_status_come_from_the_stack(cluster: Cluster) -> None:
    done, facts = cluster.entry("read_config", ["target_config"])
    assert done.returncode == 0, done.stdout[-3000:]
    assert [m["name"] for m in facts["target_config"]["models"]] == ["echo-1"]
    done, facts = cluster.entry("instances_status", ["target_instances_status"])
    assert done.returncode == 0, done.stdout[-3000:]
    assert [s["state"] for s in facts["target_instances_status"]] == ["UP"]


# --- scale.yml: the stack's replica settings, never the Deployment against its HPA ---------


@pytest.mark.parametrize("stack", available_stacks())
def test_the_scaling_keys_the_stack_exports_are_the_settings_fields(
    rendered: dict[str, dict[str, Any]], stack: str
) -> None:
    """One source: the keys come from stacks/settings.py's field aliases; a rename fails here."""
    scaling = rendered[stack]["outputs"]["runbookTarget"]["scaling"]
    assert scaling["replicasConfigKey"] == f"{PROJECT}:{REPLICAS_PATH}" == f"{PROJECT}:scheduling.replicas"
    assert (
        scaling["minReplicasConfigKey"]
        == f"{PROJECT}:{MIN_REPLICAS_PATH}"
        == f"{PROJECT}:scheduling.autoscaling.minReplicas"
    )
    assert scaling["maxReplicasConfigKey"] == f"{PROJECT}:{MAX_REPLICAS_PATH}"
    for key in ("replicasConfigKey", "minReplicasConfigKey", "maxReplicasConfigKey"):
        assert scaling[key].partition(".")[0] in PROGRAM_KEYS
    hpas = _objects(rendered[stack], "HorizontalPodAutoscaler")
    assert scaling["autoscaled"] == bool(hpas)
    if hpas:
        assert (hpas[0]["spec"]["minReplicas"], hpas[0]["spec"]["maxReplicas"]) == (
            scaling["minReplicas"],
            scaling["maxReplicas"],
        )


def _config_sets(cluster: Cluster, since: int) -> list[list[str]]:
    return [c["argv"] for c in cluster.pulumi_calls()[since:] if c["argv"][:2] == ["config", "set"]]


def _pulumi(cluster: Cluster, *args: str) -> None:
    done = subprocess.run(
        [str(cluster.pulumi), *args, "--stack", STACK],
        cwd=REPO,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def _scale_requests(cluster: Cluster) -> list[str]:
    return [r.path for r in cluster.double.requests if r.method != "GET" and r.path.endswith("/scale")]


def test_scale_without_an_hpa_sets_the_fixed_count(cluster: Cluster) -> None:
    names = _names(cluster)
    calls = len(cluster.pulumi_calls())
    try:
        done, facts = cluster.entry("scale", ["target_scale"], target_min_replicas=2)
        assert done.returncode == 0, done.stdout[-3000:]
        assert _config_sets(cluster, calls) == [
            ["config", "set", "--stack", STACK, "--path", f"{PROJECT}:scheduling.replicas", "2"]
        ]
        assert [c["argv"][0] for c in cluster.pulumi_calls()[calls:]].count("up") == 1
        deployment = cluster.double.get("Deployment", names["namespace"], names["deployment"])
        assert deployment["spec"]["replicas"] == 2
        assert {k: int(v) for k, v in facts["target_scale"]["after"].items()} == {"min": 2, "max": 2}
        # A range needs an HPA: refused with the commands that turn autoscaling on.
        refused, _ = cluster.entry("scale", ["target_scale"], target_min_replicas=2, target_max_replicas=4)
        assert refused.returncode != 0 and "has no HPA" in refused.stdout
        assert f"pulumi config rm --path {PROJECT}:scheduling.replicas" in refused.stdout
    finally:
        back, _ = cluster.entry("scale", ["target_scale"], target_min_replicas=1)
        assert back.returncode == 0, back.stdout[-3000:]
    assert _scale_requests(cluster) == []


def test_scale_with_an_hpa_sets_its_bounds_and_never_scales_the_deployment(cluster: Cluster) -> None:
    names = _names(cluster)
    namespace, deployment_name = names["namespace"], names["deployment"]
    # The local stack with an HPA instead of a fixed count, as an operator would switch it.
    _pulumi(cluster, "config", "rm", "--path", f"{PROJECT}:{REPLICAS_PATH}")
    _pulumi(cluster, "config", "set", "--path", f"{PROJECT}:{MIN_REPLICAS_PATH}", "1")
    _pulumi(cluster, "config", "set", "--path", f"{PROJECT}:{MAX_REPLICAS_PATH}", "3")
    cluster.up()
    try:
        assert _names(cluster)["scaling"]["autoscaled"] is True
        calls, scaled_before = len(cluster.pulumi_calls()), len(_scale_requests(cluster))
        done, facts = cluster.entry("scale", ["target_scale"], target_min_replicas=2, target_max_replicas=5)
        assert done.returncode == 0, done.stdout[-3000:]
        hpa_key = f"{PROJECT}:scheduling.autoscaling"
        assert _config_sets(cluster, calls) == [
            ["config", "set", "--stack", STACK, "--path", f"{hpa_key}.minReplicas", "2"],
            ["config", "set", "--stack", STACK, "--path", f"{hpa_key}.maxReplicas", "5"],
        ]
        assert {k: int(v) for k, v in facts["target_scale"]["before"].items()} == {"min": 1, "max": 3}
        hpa = cluster.double.get("HorizontalPodAutoscaler", namespace, deployment_name)
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
        deployment = cluster.double.get("Deployment", namespace, deployment_name)
        assert deployment["spec"]["replicas"] == 2  # the HPA raised it to its new minimum
        assert _scale_requests(cluster)[scaled_before:] == []  # scale.yml never scaled the Deployment

        # The same bounds again: nothing set, no `pulumi up`.
        calls = len(cluster.pulumi_calls())
        again, _ = cluster.entry("scale", ["target_scale"], target_min_replicas=2, target_max_replicas=5)
        assert again.returncode == 0, again.stdout[-3000:]
        assert [c["argv"][:2] for c in cluster.pulumi_calls()[calls:]] == [["stack", "output"]]

        # stop.yml (restore) scales to 0, where Kubernetes turns the HPA off; start.yml
        # hands the Deployment back at the HPA's minimum instead of leaving it at 0.
        stopped, _ = cluster.entry("stop", [])
        assert stopped.returncode == 0, stopped.stdout[-3000:]
        assert cluster.double.get("Deployment", namespace, deployment_name)["spec"]["replicas"] == 0
        started, _ = cluster.entry("start", [])
        assert started.returncode == 0, started.stdout[-3000:]
        assert cluster.double.get("Deployment", namespace, deployment_name)["spec"]["replicas"] == 2
    finally:
        _pulumi(cluster, "config", "rm", "--path", f"{PROJECT}:scheduling.autoscaling")
        _pulumi(cluster, "config", "set", "--path", f"{PROJECT}:{REPLICAS_PATH}", "1")
        cluster.double.objects.pop(("horizontalpodautoscalers", namespace, deployment_name), None)
        cluster.up()
    assert cluster.double.get("Deployment", namespace, deployment_name)["spec"]["replicas"] == 1
