"""A `pulumi` stand-in for the kubernetes target's contract tests (not the Pulumi CLI).

It records every invocation (argv, and whether a value came on stdin; never the
value) to $PULUMI_STANDIN_DIR/calls.jsonl and keeps the stack config that
`config set` and `config rm` write in $PULUMI_STANDIN_DIR/config.json. `stack output --json`,
`preview` and `up` run the real Pulumi program (stacks.program, under the offline
mocks) on the stack file plus that config, so a key the program does not read
changes nothing, exactly as with the real CLI; `up` then applies the rendered
Kubernetes objects to the API double at $KUBE_DOUBLE_URL.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

from stacks.offline import load_stack_config, run_program
from stacks.program import main as program
from stacks.settings import SettingsError

STATE = Path(os.environ.get("PULUMI_STANDIN_DIR", "."))
CALLS = STATE / "calls.jsonl"
CONFIG = STATE / "config.json"


def _config() -> dict[str, Any]:
    return json.loads(CONFIG.read_text()) if CONFIG.exists() else {"values": {}, "secret": []}


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def _positional(args: list[str]) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--stack", "-s", "--cwd", "-C"):
            skip = True
        elif not arg.startswith("-"):
            out.append(arg)
    return out


def _run(stack: str) -> Any:
    config, secret_keys = load_stack_config(stack)
    state = _config()
    for key, value in state["values"].items():
        root, _, path = key.partition(".")
        if path:  # --path root.field[.field...]: a field of an object value
            current = json.loads(config.get(root, "{}"))
            *parents, leaf = path.split(".")
            node = current
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = value
            config[root] = json.dumps(current)
        else:
            config[key] = value
    for key in state.get("removed", []):
        root, _, path = key.partition(".")
        if path and root in config:
            current = json.loads(config[root])
            *parents, leaf = path.split(".")
            node = current
            for parent in parents:
                node = node.get(parent, {})
            node.pop(leaf, None)
            config[root] = json.dumps(current)
        else:
            config.pop(key, None)
    secret_keys |= {key.partition(".")[0] for key in state["secret"]}
    return run_program(stack, program, config, secret_keys)


def _outputs(stack: str) -> dict[str, Any]:
    """The stack's plain outputs; cached per config (the program is deterministic)."""
    cache = STATE / "outputs-cache.json"
    key = f"{stack}:{json.dumps(_config(), sort_keys=True)}"
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    if key not in cached:
        run = _run(stack)
        cached[key] = {name: out.value for name, out in run.stack_outputs.items() if not out.secret}
        cache.write_text(json.dumps(cached))
    return cached[key]


def _config_set(args: list[str], stdin_value: str | None) -> int:
    positional = _positional(args)[2:]  # after "config set"
    key = positional[0]
    value = positional[1] if len(positional) > 1 else stdin_value
    if value is None:
        print("error: no value on the command line or stdin", file=sys.stderr)
        return 1
    if "--path" not in args and "." in key.partition(":")[2]:
        print(f"error: {key} has a dot: pass --path to set a field", file=sys.stderr)
        return 1
    state = _config()
    state["values"][key] = value
    state["removed"] = [k for k in state.get("removed", []) if k != key]
    if "--secret" in args:
        state["secret"] = sorted(set(state["secret"]) | {key})
    CONFIG.write_text(json.dumps(state))
    return 0


def _config_rm(args: list[str]) -> int:
    key = _positional(args)[2]  # after "config rm"
    if "--path" not in args and "." in key.partition(":")[2]:
        print(f"error: {key} has a dot: pass --path to remove a field", file=sys.stderr)
        return 1
    state = _config()
    state["values"].pop(key, None)
    state["removed"] = sorted(set(state.get("removed", [])) | {key})
    CONFIG.write_text(json.dumps(state))
    return 0


def _apply(run: Any) -> None:
    manifests = []
    for resource in run.kubernetes():
        manifest = json.loads(json.dumps(resource.values))  # secrets unwrapped: the cluster gets real values
        if manifest.get("kind") in (
            "Deployment",
            "Secret",
            "ConfigMap",
            "Job",
            "Service",
            "ServiceAccount",
            "HorizontalPodAutoscaler",
        ):
            manifests.append(manifest)
    request = urllib.request.Request(
        os.environ["KUBE_DOUBLE_URL"] + "/_double/apply",
        data=json.dumps(manifests).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def main(argv: list[str]) -> int:
    stdin_value = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    stdin_value = stdin_value if stdin_value else None
    with CALLS.open("a") as calls:
        calls.write(json.dumps({"argv": argv, "stdin": stdin_value is not None}) + "\n")
    positional = _positional(argv)
    stack = _option(argv, "--stack") or _option(argv, "-s") or "dev"
    try:
        if positional[:2] == ["config", "set"]:
            return _config_set(argv, stdin_value)
        if positional[:2] == ["config", "rm"]:
            return _config_rm(argv)
        if positional[:2] == ["stack", "output"] and "--json" in argv:
            print(json.dumps(_outputs(stack)))
            return 0
        if positional[:1] == ["preview"]:
            _run(stack)
            print("Previewing update (stand-in): settings valid")
            return 0
        if positional[:1] == ["up"]:
            _apply(_run(stack))
            print("Resources:\n    1 changed (stand-in)")
            return 0
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 255
    print(f"pulumi stand-in: '{' '.join(argv)}' is not implemented", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
