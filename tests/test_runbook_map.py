"""docs/runbooks/README.md maps every seed procedure to a runbook and its test: the names are real.

A playbook renamed or a test file moved leaves a row pointing at nothing; this fails then.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAP_HEADER = "| seed | procedure | runbook | test |"


def _rows() -> list[dict[str, str]]:
    lines = (REPO / "docs" / "runbooks" / "README.md").read_text().splitlines()
    start = lines.index(MAP_HEADER) + 2
    columns = [c.strip() for c in MAP_HEADER.strip("|").split("|")]
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


def test_both_seeds_are_mapped() -> None:
    seeds = {row["seed"] for row in _rows()}
    on_disk = {p.name[:3] for p in (REPO.parent / "shared" / "seeds").glob("[0-9]*.txt")}
    assert seeds == {"000", "002"}
    assert not on_disk or on_disk <= seeds, f"seeds without a row: {on_disk - seeds}"


def test_every_row_names_a_runbook_that_exists_and_a_test_or_why_not() -> None:
    missing = []
    for row in _rows():
        procedure = row["procedure"]
        named = re.findall(r"`([\w./-]+\.(?:yml|yaml|py))`", row["runbook"])
        out_of_scope = row["runbook"].startswith("out of scope: ")
        for name in named:
            path = REPO / "playbooks" / name if "/" not in name else REPO / name
            if not path.exists():
                missing.append(f"{procedure}: {name}")
        tests = re.findall(r"`(tests/[\w./-]+\.py)`", row["test"])
        assert tests or out_of_scope, f"{procedure}: no test and no reason"
        missing += [f"{procedure}: {t}" for t in tests if not (REPO / t).exists()]
    assert not missing, f"named in the seed map but not in the repository: {missing}"


def test_every_runbook_serves_some_procedure() -> None:
    mapped = {m for row in _rows() for m in re.findall(r"`(\w+)\.yml`", row["runbook"])}
    playbooks = {p.stem for p in (REPO / "playbooks").glob("*.yml")}
    assert playbooks <= mapped, f"playbooks no seed procedure names: {playbooks - mapped}"
