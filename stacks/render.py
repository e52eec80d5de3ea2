"""Offline render: the program's resources as Kubernetes manifests and a JSON inventory.

Output is deterministic (sorted, stable mock values) and every secret is redacted, so the
tree can be committed, diffed and scanned.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from stacks.offline import REDACTED, CapturedResource, OfflineRun, run_stack

MANIFESTS_DIR = "manifests"
INVENTORY_FILE = "resources.json"


def short_urn(urn: str) -> str:
    """'urn:pulumi:stack::project::parent$type::name' -> 'type::name' (stack-independent)."""
    if not urn:
        return ""
    qualified_type, name = urn.split("::")[-2:]
    return f"{qualified_type.split('$')[-1]}::{name}"


def manifest(resource: CapturedResource) -> dict[str, Any]:
    document = dict(resource.inputs)
    if resource.kind == "Secret":
        # The SDK marks a Secret's whole payload secret; the key names are not, and stay readable.
        for field in ("data", "stringData"):
            if field in document:
                document[field] = {key: REDACTED for key in resource.values[field]}
    return document


def manifest_filename(resource: CapturedResource) -> str:
    return f"{resource.kind.lower()}_{resource.metadata_name}.yaml"


def inventory(run: OfflineRun) -> dict[str, Any]:
    resources = sorted(run.resources, key=lambda r: (r.type, r.name))
    return {
        "stack": run.stack,
        "outputs": {
            name: REDACTED if out.secret else out.value for name, out in sorted(run.stack_outputs.items())
        },
        "resources": [
            {
                "type": r.type,
                "name": r.name,
                "parent": short_urn(r.parent),
                "dependsOn": sorted(short_urn(urn) for urn in r.dependencies),
                "inputs": manifest(r) if r.kind else r.inputs,
            }
            for r in resources
        ],
    }


def write_render(run: OfflineRun, out: Path) -> Path:
    manifests = out / MANIFESTS_DIR
    if manifests.exists():
        shutil.rmtree(manifests)
    manifests.mkdir(parents=True)
    for resource in sorted(run.kubernetes(), key=lambda r: (r.kind, r.metadata_name)):
        path = manifests / manifest_filename(resource)
        if path.exists():
            raise ValueError(f"two resources render to {path.name}")
        path.write_text(yaml.safe_dump(manifest(resource), sort_keys=True, default_flow_style=False))
    (out / INVENTORY_FILE).write_text(json.dumps(inventory(run), indent=2, sort_keys=True) + "\n")
    return out


def render(stack: str, out: Path) -> Path:
    return write_render(run_stack(stack), out)
