"""docs/architecture.md's module map names every module of gateway_app, and only modules that exist.

A module added, moved or removed without its line in the map fails here, so the map stays true.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "gateway_app"


def _mapped() -> list[str]:
    """Module paths under gateway_app/ that the map's code block names, in order.

    A line starts with names (``x.py`` or a package ``x/``), then says what they do; lines that
    start otherwise are headings. Names on a deeper indent are inside the last package above.
    """
    text = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"## Module map\n+```\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no '## Module map' code block"
    named: list[str] = []
    packages: list[tuple[int, str]] = []  # (indent, "pkg/") of the enclosing packages
    for line in block.group(1).splitlines():
        names = list(itertools.takewhile(lambda word: word.endswith((".py", "/")), line.split()))
        if not names:
            continue  # a heading
        indent = len(line) - len(line.lstrip())
        while packages and packages[-1][0] >= indent:
            packages.pop()
        prefix = "".join(p for _, p in packages)
        for name in names:
            if name.endswith("/"):
                packages.append((indent, name))
            else:
                named.append(prefix + name)
    return named


def test_the_map_names_every_module_once_and_nothing_else() -> None:
    named = _mapped()
    on_disk = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))
    assert len(named) == len(set(named)), f"named twice: {sorted({n for n in named if named.count(n) > 1})}"
    assert sorted(set(named) - set(on_disk)) == [], "the map names modules that do not exist"
    assert sorted(set(on_disk) - set(named)) == [], "modules missing from docs/architecture.md's map"
