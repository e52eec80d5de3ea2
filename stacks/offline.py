"""Run the Pulumi program in-process under mocks: no CLI, no cloud, deterministic values.

Every registered resource is captured with its inputs, its parent and its dependencies;
secret inputs are kept apart so that callers can redact them. Generated values (passwords,
keys, ids) are derived from resource names, so two runs of one stack are identical.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

from stacks.settings import PROJECT, REPO_ROOT

REDACTED = "[secret]"
STACK_DIR = REPO_ROOT / "stacks"
_DEFAULT_SPECIAL = "!@#$%&*()-_=+[]{}<>:?"


def stack_file(stack: str) -> Path:
    return STACK_DIR / f"Pulumi.{stack}.yaml"


def available_stacks() -> list[str]:
    return sorted(path.name.split(".")[1] for path in STACK_DIR.glob("Pulumi.*.yaml"))


def load_stack_config(stack: str) -> tuple[dict[str, str], set[str]]:
    """The stack file's config as the engine passes it: namespaced keys, JSON for objects.

    ``secure:`` values cannot be decrypted offline; they become a placeholder marked secret.
    """
    path = stack_file(stack)
    if not path.is_file():
        raise FileNotFoundError(
            f"no stack file {path.relative_to(REPO_ROOT)}; stacks: {', '.join(available_stacks())}"
        )
    entries = (yaml.safe_load(path.read_text()) or {}).get("config", {})
    config: dict[str, str] = {}
    secret_keys: set[str] = set()
    for key, value in entries.items():
        full_key = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[full_key] = REDACTED
            secret_keys.add(full_key)
        else:
            config[full_key] = value if isinstance(value, str) else json.dumps(value)
    return config, secret_keys


def _plain(value: Any) -> Any:
    """Engine values as Python values: secrets unwrapped, whole floats back to ints."""
    if rpc.is_rpc_secret(value):
        return _plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _redacted(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return REDACTED
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return _plain(value)


def _deterministic_text(seed: str, length: int, alphabet: str) -> str:
    chars: list[str] = []
    counter = 0
    while len(chars) < length:
        digest = hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        chars += [alphabet[byte % len(alphabet)] for byte in digest]
        counter += 1
    return "".join(chars[:length])


class OfflineMocks(pulumi.runtime.Mocks):
    """Provider behaviour for the resource types the program declares, with stable values."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        inputs = _plain(args.inputs)
        state = dict(inputs)
        if args.typ in (
            "random:index/randomPassword:RandomPassword",
            "random:index/randomString:RandomString",
        ):
            alphabet = (
                (string.ascii_lowercase if inputs.get("lower", True) else "")
                + (string.ascii_uppercase if inputs.get("upper", True) else "")
                + (string.digits if inputs.get("numeric", True) else "")
            )
            if inputs.get("special", True):
                alphabet += inputs.get("overrideSpecial") or _DEFAULT_SPECIAL
            state["result"] = _deterministic_text(f"{args.typ}/{args.name}", int(inputs["length"]), alphabet)
        elif args.typ == "aws:rds/instance:Instance":
            address = f"{inputs['identifier']}.c0ffee000000.mock.rds.amazonaws.com"
            state.update(
                address=address,
                port=5432,
                endpoint=f"{address}:5432",
                arn=f"arn:aws:rds:mock:000000000000:db:{inputs['identifier']}",
            )
        elif args.typ.startswith("aws:"):
            state.setdefault("name", args.name)
            state["arn"] = f"arn:aws:mock:000000000000:{args.typ.split(':')[1]}:{state['name']}"
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


@dataclass(frozen=True)
class CapturedResource:
    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    dependencies: tuple[str, ...]
    # Inputs as the engine receives them, secrets unwrapped: for assertions only, never written out.
    values: dict[str, Any]
    # The same inputs with every secret replaced by REDACTED.
    inputs: dict[str, Any]
    # Outputs the program asked the engine to keep secret (additional_secret_outputs).
    secret_outputs: tuple[str, ...] = ()
    # The names of the resource's aliases (names it had in earlier versions of the program).
    alias_names: tuple[str, ...] = ()

    @property
    def kind(self) -> str | None:
        return self.values.get("kind") if self.type.startswith("kubernetes:") else None

    @property
    def metadata_name(self) -> str | None:
        return (self.values.get("metadata") or {}).get("name")


@dataclass(frozen=True)
class StackOutput:
    value: Any
    secret: bool


@dataclass
class OfflineRun:
    stack: str
    resources: list[CapturedResource] = field(default_factory=list)
    # Outputs registered by components (by URN), secrets still wrapped as engine secrets.
    component_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    stack_outputs: dict[str, StackOutput] = field(default_factory=dict)

    def by_type(self, type_suffix: str) -> list[CapturedResource]:
        return [r for r in self.resources if r.type.endswith(type_suffix)]

    def one(self, type_suffix: str, name: str | None = None) -> CapturedResource:
        matches = [r for r in self.by_type(type_suffix) if name is None or r.name == name]
        if len(matches) != 1:
            raise LookupError(f"{self.stack}: expected one {type_suffix} {name or ''}, found {len(matches)}")
        return matches[0]

    def kubernetes(self) -> list[CapturedResource]:
        return [r for r in self.resources if r.kind is not None]


class RecordingMonitor(MockMonitor):
    """The mock monitor, also recording what the engine would see: parents, dependencies, outputs."""

    def __init__(self, mocks: pulumi.runtime.Mocks, run: OfflineRun):
        super().__init__(mocks)
        self._run = run

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = rpc.deserialize_properties(request.object)
            self._run.resources.append(
                CapturedResource(
                    type=request.type,
                    name=request.name,
                    urn=response.urn,
                    parent=request.parent,
                    custom=request.custom,
                    dependencies=tuple(sorted(request.dependencies)),
                    values=_plain(raw),
                    inputs=_redacted(raw),
                    secret_outputs=tuple(request.additionalSecretOutputs),
                    alias_names=tuple(
                        a.spec.name for a in request.aliases if a.HasField("spec") and a.spec.name
                    ),
                )
            )
        return response

    def RegisterResourceOutputs(self, request):
        self._run.component_outputs[request.urn] = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)


async def _resolve_exports() -> dict[str, StackOutput]:
    root = pulumi.runtime.settings.get_root_resource()
    resolved = {}
    for name, value in sorted(root.outputs.items()):
        output = pulumi.Output.from_input(value)
        resolved[name] = StackOutput(await output.future(), await output.is_secret())
    return resolved


def run_program(
    stack: str,
    program: Callable[[], None],
    config: dict[str, str],
    secret_keys: set[str] = frozenset(),
    project: str = PROJECT,
) -> OfflineRun:
    """Run ``program`` as stack ``stack`` with ``config`` under mocks; errors propagate unchanged."""
    run = OfflineRun(stack)

    def in_fresh_context() -> None:
        pulumi.runtime.set_all_config(config, sorted(secret_keys))
        mocks = OfflineMocks()
        pulumi.runtime.set_mocks(
            mocks, project=project, stack=stack, preview=False, monitor=RecordingMonitor(mocks, run)
        )

        async def collect_exports() -> None:
            run.stack_outputs = await _resolve_exports()

        @pulumi.runtime.test
        def execute() -> Any:
            program()
            return asyncio.ensure_future(collect_exports())

        execute()

    # A fresh context per run: Pulumi keeps its settings, config and root stack in context variables.
    # And a fresh event loop: Pulumi's mocks use the current loop, and the caller (a test session
    # where async tests closed theirs, say) may have none.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        contextvars.Context().run(in_fresh_context)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return run


def run_stack(
    stack: str, overrides: dict[str, Any] | None = None, secrets: dict[str, str] | None = None
) -> OfflineRun:
    """Run the real program for a stack file; overrides replace (or, with None, remove) config keys."""
    from stacks.program import main

    config, secret_keys = load_stack_config(stack)
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(f"{PROJECT}:{key}", None)
        else:
            config[f"{PROJECT}:{key}"] = value if isinstance(value, str) else json.dumps(value)
    for key, value in (secrets or {}).items():
        config[f"{PROJECT}:{key}"] = value
        secret_keys.add(f"{PROJECT}:{key}")
    return run_program(stack, main, config, secret_keys)
