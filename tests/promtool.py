"""Finding and running promtool, for every test that checks rules or configs.

promtool ships with Prometheus (Debian/Ubuntu: ``apt-get install prometheus``).
Tests that need it fail, never skip, when it is missing: a skipped rule test
looks green while nothing was checked. ``PROMTOOL=/path/to/promtool`` picks a
specific binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

INSTALL_HINT = (
    "promtool is required to test the alert rules and the dashboard queries. "
    "Install it with `apt-get install prometheus` (the Debian/Ubuntu package ships "
    "promtool), or point PROMTOOL at a promtool binary."
)


def promtool_path() -> Path:
    """The promtool binary to use; raises AssertionError saying how to install it."""
    configured = os.environ.get("PROMTOOL")
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise AssertionError(f"PROMTOOL={configured} is not an executable file. {INSTALL_HINT}")
        return path
    found = shutil.which("promtool")
    if found is None:
        raise AssertionError(f"promtool not found on PATH. {INSTALL_HINT}")
    return Path(found)


def run_promtool(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``promtool ARGS...`` and return its result (never raises on a non-zero exit)."""
    return subprocess.run(
        [str(promtool_path()), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
