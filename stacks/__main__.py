"""Offline commands: ``python -m stacks render|diff`` (no Pulumi CLI, no cloud credentials)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stacks.diff import diff_stack, format_diff
from stacks.render import render
from stacks.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stacks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    render_cmd = commands.add_parser("render", help="write DIR/manifests/*.yaml and DIR/resources.json")
    render_cmd.add_argument("--stack", required=True)
    render_cmd.add_argument("--out", required=True, type=Path)
    diff_cmd = commands.add_parser(
        "diff", help="resource diff against a git ref; exit 1 when anything changed"
    )
    diff_cmd.add_argument("--stack", required=True)
    diff_cmd.add_argument("--base", required=True, help="git ref to compare with, e.g. origin/main")
    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            out = render(args.stack, args.out)
            print(f"rendered stack {args.stack} to {out}")
            return 0
        result = diff_stack(args.stack, args.base)
    except (SettingsError, FileNotFoundError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_diff(args.stack, result))
    return 0 if result.empty else 1


if __name__ == "__main__":
    sys.exit(main())
