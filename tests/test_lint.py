"""ruff and mypy (strict, over what pyproject's [tool.mypy] names: the package, the
tests, the benchmarks and the mixin's render script) are part of the suite, so CI
enforces them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=240, check=False)


def test_ruff_is_clean() -> None:
    proc = run("ruff", "check", "exporter", "tests", "deploy", "benchmarks", "mixin")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    # No paths: pyproject's [tool.mypy] says what is checked, so the suite and
    # a developer's bare `mypy` check the same files.
    proc = run("mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_covers_the_package_tests_benchmarks_and_mixin() -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        mypy = tomllib.load(f)["tool"]["mypy"]
    assert mypy["strict"] is True
    assert {"exporter", "tests", "benchmarks", "mixin"} <= set(mypy["packages"])
