"""The runbooks as the llm_gateway.runbooks collection, built and installed for real.

The collection is built from playbooks/ by scripts/build_collection.py (what
`make collection` runs) into this module's temporary directory and installed
with `ansible-galaxy collection install --offline --no-deps`: the collections it
depends on are not downloaded, they come from the `ansible` package in the
virtualenv (its ansible_collections is always on Ansible's search path). The
runs use an empty roles path and a working directory outside playbooks/, so
only the installed collection can provide the roles.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.playbooks.conftest import LOCAL_INVENTORY, Deployment
from tests.support.processes import REPO

BIN = Path(sys.executable).parent
FQCN = "llm_gateway.runbooks"
_FQCN_USE = re.compile(r"\b([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*\b")


class Installed:
    def __init__(self, work: Path, tarball: Path):
        self.work = work
        self.tarball = tarball
        self.collections = work / "collections"
        self.root = self.collections / "ansible_collections" / "llm_gateway" / "runbooks"
        self.env = {
            **{key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")},
            "ANSIBLE_COLLECTIONS_PATH": str(self.collections),
            "ANSIBLE_ROLES_PATH": str(work / "no-roles"),
            "ANSIBLE_NOCOLOR": "1",
        }

    def playbook(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "ansible-playbook"), *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("collection")
    (work / "no-roles").mkdir()
    build = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build_collection.py"),
            "--staging",
            str(work / "staging"),
            "--output",
            str(work / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (tarball,) = (work / "dist").glob("llm_gateway-runbooks-*.tar.gz")
    result = Installed(work, tarball)
    install = subprocess.run(
        [
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            "--offline",
            "--no-deps",
            "-p",
            str(result.collections),
            str(tarball),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return result


def test_tarball_is_versioned_like_the_gateway_and_holds_every_runbook_and_role(installed: Installed) -> None:
    version = re.search(r'__version__ = "([^"]+)"', (REPO / "gateway_app" / "__init__.py").read_text())
    assert version is not None
    assert installed.tarball.name == f"llm_gateway-runbooks-{version.group(1)}.tar.gz"
    with tarfile.open(installed.tarball) as tar:
        names = set(tar.getnames())
    manifest = json.loads((installed.root / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == version.group(1)
    assert "meta/runtime.yml" in names
    for runbook in (REPO / "playbooks").glob("*.yml"):
        assert f"playbooks/{runbook.name}" in names, runbook.name
    for role in (REPO / "playbooks" / "roles").iterdir():
        assert f"roles/{role.name}/tasks" in names, role.name


def test_every_collection_the_content_uses_is_a_declared_dependency(installed: Installed) -> None:
    declared = set(
        json.loads((installed.root / "MANIFEST.json").read_text())["collection_info"]["dependencies"]
    )
    used: set[str] = set()
    for path in [*installed.root.rglob("*.yml"), *installed.root.rglob("*.j2")]:
        if path.name in ("galaxy.yml", "runtime.yml") or path.parent.name == "meta":
            continue
        used |= {f"{ns}.{name}" for ns, name in _FQCN_USE.findall(path.read_text())}
    # Dotted words that are not FQCNs (attribute access in Jinja) have no collection installed.
    installed_collections = {
        f"{ns.name}.{coll.name}"
        for base in [installed.collections, *map(Path, sys.path)]
        if (base / "ansible_collections").is_dir()
        for ns in (base / "ansible_collections").iterdir()
        if ns.is_dir()
        for coll in ns.iterdir()
        if coll.is_dir()
    }
    used &= installed_collections | declared
    assert used - {"ansible.builtin", FQCN} <= declared, sorted(used - declared - {"ansible.builtin", FQCN})
    assert "community.general" in used  # the scan finds FQCNs at all


def test_role_names_in_the_collection_playbooks_are_qualified(installed: Installed) -> None:
    for path in (installed.root / "playbooks").rglob("*.yml"):
        for text in re.findall(r"include_role:\s*\n\s+name:\s*(\S+)", path.read_text()):
            assert text.strip("\"'").startswith(f"{FQCN}."), f"{path.name}: {text}"


def test_missing_role_variable_fails_with_the_argument_spec_message(installed: Installed) -> None:
    play = installed.work / "drain_without_server.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Drain without naming the server",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Drain",
                            "ansible.builtin.include_role": {
                                "name": f"{FQCN}.loadbalancer",
                                "tasks_from": "drain",
                            },
                            "vars": {"gateway_root": str(installed.work)},
                        }
                    ],
                }
            ]
        )
    )
    done = installed.playbook("-i", "localhost,", "-c", "local", str(play))
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Validating arguments against arg spec 'drain'" in output, output[-3000:]
    assert "missing required arguments: lb_server" in output, output[-3000:]


def test_wrong_type_fails_with_the_argument_spec_message(installed: Installed) -> None:
    play = installed.work / "prune_with_words.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Prune with a word for a number",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Prune",
                            "ansible.builtin.include_role": {
                                "name": f"{FQCN}.release",
                                "tasks_from": "prune",
                            },
                            "vars": {"gateway_root": str(installed.work), "gateway_keep_releases": "a few"},
                        }
                    ],
                }
            ]
        )
    )
    done = installed.playbook("-i", "localhost,", "-c", "local", str(play))
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Validating arguments against arg spec 'prune'" in output, output[-3000:]
    assert "gateway_keep_releases" in output and "int" in output, output[-3000:]
    assert not (installed.work / "releases").exists()


def test_health_report_runs_from_the_installed_collection(
    installed: Installed, local_deployment: Deployment
) -> None:
    done = installed.playbook(
        f"{FQCN}.health_report", "-i", str(LOCAL_INVENTORY), "-e", f"@{local_deployment.vars_file}"
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    # Task headers name the role they come from: the collection's, not playbooks/roles.
    assert f"TASK [{FQCN}.target_hosts : " in output, output[-3000:]
    assert "== instances ==" in output and "gateway_* samples" in output, output[-3000:]
    recap = re.search(
        r"^local\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", output, re.M
    )
    assert recap is not None and recap.group(4) == "0", output[-3000:]
