"""Resource-level diff of the rendered program between a git ref and the working tree."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacks.offline import run_stack
from stacks.render import INVENTORY_FILE, inventory
from stacks.settings import REPO_ROOT

Key = tuple[str, str]


@dataclass
class StackDiff:
    added: list[Key] = field(default_factory=list)
    removed: list[Key] = field(default_factory=list)
    # (type, name) -> [(property path, before, after)]
    changed: dict[Key, list[tuple[str, Any, Any]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


_MISSING = "<absent>"


def property_changes(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in sorted(set(before) | set(after)):
            child = f"{path}.{key}" if path else key
            changes += property_changes(before.get(key, _MISSING), after.get(key, _MISSING), child)
        return changes
    if isinstance(before, list) and isinstance(after, list):
        changes = []
        for i in range(max(len(before), len(after))):
            changes += property_changes(
                before[i] if i < len(before) else _MISSING,
                after[i] if i < len(after) else _MISSING,
                f"{path}[{i}]",
            )
        return changes
    return [] if before == after else [(path, before, after)]


def _by_key(document: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    return {
        (r["type"], r["name"]): {"inputs": r["inputs"], "dependsOn": r["dependsOn"]}
        for r in document["resources"]
    }


def diff_inventories(base: dict[str, Any], head: dict[str, Any]) -> StackDiff:
    old, new = _by_key(base), _by_key(head)
    result = StackDiff(added=sorted(set(new) - set(old)), removed=sorted(set(old) - set(new)))
    for key in sorted(set(old) & set(new)):
        changes = property_changes(old[key], new[key])
        if changes:
            result.changed[key] = changes
    return result


def format_diff(stack: str, diff: StackDiff) -> str:
    lines = [
        f"stack {stack}: {len(diff.added)} to add, {len(diff.changed)} to change, "
        f"{len(diff.removed)} to remove"
    ]
    lines += [f"+ {type_} {name}" for type_, name in diff.added]
    lines += [f"- {type_} {name}" for type_, name in diff.removed]
    for (type_, name), changes in diff.changed.items():
        lines.append(f"~ {type_} {name}")
        lines += [
            f"    ~ {path}: {json.dumps(before)} -> {json.dumps(after)}" for path, before, after in changes
        ]
    return "\n".join(lines)


def render_base(ref: str, stack: str, workdir: Path) -> dict[str, Any]:
    """Render ``stack`` as of ``ref`` in a temporary worktree; a base without the stack is empty."""
    tree = workdir / "base"
    subprocess.run(
        ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", "--quiet", str(tree), ref], check=True
    )
    try:
        if (
            not (tree / "stacks" / "render.py").is_file()
            or not (tree / "stacks" / f"Pulumi.{stack}.yaml").is_file()
        ):
            return {"stack": stack, "outputs": {}, "resources": []}
        out = workdir / "out"
        subprocess.run(
            [sys.executable, "-m", "stacks", "render", "--stack", stack, "--out", str(out)],
            cwd=tree,
            check=True,
            env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        )
        return json.loads((out / INVENTORY_FILE).read_text())
    finally:
        subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(tree)], check=True)


def diff_stack(stack: str, base_ref: str) -> StackDiff:
    with tempfile.TemporaryDirectory(prefix="stacks-diff-") as workdir:
        base = render_base(base_ref, stack, Path(workdir))
    return diff_inventories(base, inventory(run_stack(stack)))
