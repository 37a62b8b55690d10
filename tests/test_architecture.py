"""docs/architecture.md's ownership table names every module of the package,
and nothing that is not there, so the page cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter"


def ownership_table() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Who owns what", 1)[1].split("\n## ", 1)[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("|"))


def named(table: str) -> set[str]:
    """Module files (``x.py``) and packages (``x/``) named in backquotes."""
    return set(re.findall(r"`([a-z_]+(?:\.py|/))`", table))


def test_every_module_and_subpackage_has_an_owner_row() -> None:
    modules = {p.name for p in PACKAGE.glob("*.py") if not p.name.startswith("__")}
    packages = {p.name + "/" for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert modules | packages, "no modules found"
    assert (modules | packages) - named(ownership_table()) == set(), "add them to the table"


def test_every_module_the_table_names_exists() -> None:
    files = {p.name for p in PACKAGE.rglob("*.py")}
    dirs = {p.name + "/" for p in PACKAGE.rglob("*") if p.is_dir()}
    assert named(ownership_table()) - files - dirs == set(), "stale names in the table"


def test_the_table_check_can_fail() -> None:
    assert named("| x | `gone.py`, `web/` |") == {"gone.py", "web/"}
    assert "gone.py" not in {p.name for p in PACKAGE.rglob("*.py")}
