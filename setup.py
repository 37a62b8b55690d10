"""Build hooks only: every piece of metadata lives in pyproject.toml.

A wheel or sdist records which commit it was built from, so that
`token-health-exporter --version` and `oauth_exporter_build_info` can name it
after installation, where no git checkout is around. The hooks write
`exporter/_build.py` into the build tree (never into the source tree):

- `build_py` writes it into the wheel's build directory;
- `sdist` writes it into the release tree, so that a wheel built later from the
  unpacked sdist (as `python -m build` does) still knows the commit.

The revision comes from, in order: the TOKEN_EXPORTER_REVISION environment
variable (the Dockerfile passes its REVISION build argument, since .git is not
in the build context); `git rev-parse HEAD` when this directory is a checkout;
the `_build.py` an sdist carries; else "unknown". The build date is
SOURCE_DATE_EPOCH when set, else the commit's time, so that two builds of one
commit are identical (reproducible-builds.org), else the time of the build.
"""

from __future__ import annotations

import ast
import os
import subprocess
import time
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
GENERATED = Path("exporter") / "_build.py"


def _git(*args: str) -> str | None:
    # Only this directory's own checkout: an unpacked sdist in a temp dir that
    # happens to sit inside some other repository must not take its commit.
    if not (ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def _carried() -> dict[str, str]:
    """What an unpacked sdist's _build.py says (empty in a checkout)."""
    path = ROOT / GENERATED
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
            values[node.targets[0].id] = node.value.value
    return values


def build_values() -> dict[str, str]:
    carried = _carried()
    revision = (
        os.environ.get("TOKEN_EXPORTER_REVISION", "").strip()
        or _git("rev-parse", "HEAD")
        or carried.get("REVISION")
        or "unknown"
    )
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip() or _git("log", "-1", "--format=%ct")
    if epoch:
        date = time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(int(epoch)))
    else:
        date = carried.get("BUILD_DATE") or time.strftime("%Y%m%d-%H:%M:%S", time.gmtime())
    return {"REVISION": revision, "BUILD_DATE": date}


def write_build_module(target: Path) -> None:
    values = build_values()
    lines = ['"""Written at build time by setup.py; not in the source tree."""', ""]
    lines += [f"{name} = {value!r}" for name, value in values.items()]
    target.parent.mkdir(parents=True, exist_ok=True)
    # The sdist release tree hard-links source files: replace, never write through.
    target.unlink(missing_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


class BuildPyWithRevision(build_py):
    def run(self) -> None:
        super().run()
        # An editable install imports the source tree, where _build.py never
        # is; the exporter asks git at run time there instead.
        if not self.editable_mode:
            write_build_module(Path(self.build_lib) / GENERATED)


class SdistWithRevision(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        write_build_module(Path(base_dir) / GENERATED)


setup(cmdclass={"build_py": BuildPyWithRevision, "sdist": SdistWithRevision})
