"""What this build of the exporter is: version, revision, build date, Python, platform.

One source for `--version`, the landing page and `oauth_exporter_build_info`.

- The version is written once, in pyproject.toml. An installed package reads it
  from its distribution metadata (`importlib.metadata`). A source checkout run
  without installing (`PYTHONPATH=.`), or run through an editable install
  whose metadata was written before the last version bump, reads the checkout's
  pyproject.toml instead, since that is the code that is running.
- The revision and build date are baked into `exporter/_build.py` by the build
  hooks in setup.py (a wheel, an sdist, the container image). In a checkout,
  where that module does not exist, the revision is `git rev-parse HEAD`.
  Otherwise both are "unknown".

Every value is computed once per process.
"""

from __future__ import annotations

import functools
import importlib
import platform as _platform
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "token-health-exporter"
PROGRAM = "token-health-exporter"
UNKNOWN = "unknown"

_PACKAGE_DIR = Path(__file__).resolve().parent
#: The checkout root when running from source; absent in an installed wheel.
_SOURCE_ROOT = _PACKAGE_DIR.parent

#: Go's GOARCH names, which Prometheus binaries print in `platform:`.
_ARCHITECTURES = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "i386": "386",
    "i686": "386",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}


def _checkout_version() -> str | None:
    """The version in the pyproject.toml next to this package, if it is ours."""
    path = _SOURCE_ROOT / "pyproject.toml"
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if project.get("name") != DISTRIBUTION:
        return None
    version = project.get("version")
    return version if isinstance(version, str) else None


@functools.cache
def version() -> str:
    checkout = _checkout_version()
    if checkout is not None:
        return checkout
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        # Neither installed nor a checkout (e.g. the package copied by hand).
        return "0.0.0+unknown"


def _baked(name: str) -> str | None:
    try:
        module = importlib.import_module("exporter._build")
    except ImportError:
        return None
    value = getattr(module, name, None)
    return value if isinstance(value, str) and value else None


def _git_revision() -> str | None:
    # Only a checkout whose root is right above the package: never the commit
    # of some unrelated repository the installed package happens to sit in.
    if not (_SOURCE_ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(_SOURCE_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


@functools.cache
def revision() -> str:
    """The git commit this code was built from, or "unknown"."""
    return _baked("REVISION") or _git_revision() or UNKNOWN


@functools.cache
def build_date() -> str:
    """UTC, as Prometheus prints it (20261202-09:30:00), or "unknown"."""
    return _baked("BUILD_DATE") or UNKNOWN


def python_version() -> str:
    return _platform.python_version()


def platform(system: str | None = None, machine: str | None = None) -> str:
    """`linux/amd64`, the way Prometheus binaries name their platform (Go's names)."""
    system = sys.platform if system is None else system
    if system.startswith("linux"):
        system = "linux"
    machine = (_platform.machine() if machine is None else machine).lower()
    return f"{system}/{_ARCHITECTURES.get(machine, machine or UNKNOWN)}"


def version_text(program: str = PROGRAM) -> str:
    """What `--version` prints, in the layout of Prometheus' version.Print."""
    return (
        f"{program}, version {version()} (revision: {revision()})\n"
        f"  build date:       {build_date()}\n"
        f"  python version:   {python_version()}\n"
        f"  platform:         {platform()}\n"
    )
