"""Packaging: one version, PEP 639 licence metadata, `--version` the Prometheus way,
a revision that survives `pip install .`, clean `python -m build` and `twine check`,
and lock files that cover the dependencies with hashes for both image platforms.

The slow tests build and install for real: they need the package index (CI has
it) and take a minute or two.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import exporter
from exporter import buildinfo

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements.lock"
BUILD_LOCK = REPO / "requirements-build.lock"
VERSION_LINES = re.compile(
    r"token-health-exporter, version (?P<version>\S+) \(revision: (?P<revision>\S+)\)\n"
    r"  build date:       (?P<date>\d{8}-\d\d:\d\d:\d\d|unknown)\n"
    r"  python version:   (?P<python>\d+\.\d+\.\d+\S*)\n"
    r"  platform:         (?P<platform>[a-z0-9]+/[a-z0-9_]+)\n"
)


def project() -> dict[str, Any]:
    data: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data


def clean_env(**extra: str) -> dict[str, str]:
    # PYTHONPATH would make a fresh venv import this checkout instead of what
    # was installed into it.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return {**env, **extra}


def run(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=clean_env() if env is None else env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


# --- version and licence ----------------------------------------------------------------


def test_the_version_is_written_once() -> None:
    assert exporter.__version__ == buildinfo.version() == project()["project"]["version"]
    literal = re.compile(r"""__version__\s*=\s*["']|version\s*=\s*["']\d""")
    offenders = [p.name for p in (REPO / "exporter").rglob("*.py") if literal.search(p.read_text())]
    assert offenders == []


def test_licence_metadata_is_pep_639() -> None:
    meta = project()
    assert meta["project"]["license"] == "Apache-2.0"
    assert meta["project"]["license-files"] == ["LICENSE"]
    # A licence classifier next to an SPDX expression is an error under PEP 639.
    assert not [c for c in meta["project"]["classifiers"] if c.startswith("License ::")]
    (requirement,) = [Requirement(r) for r in meta["build-system"]["requires"]]
    assert requirement.name == "setuptools" and not requirement.specifier.contains("76.9")
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 11_000


def test_project_urls_and_description() -> None:
    meta = project()["project"]
    assert {"Homepage", "Source", "Issues"} <= set(meta["urls"])
    assert all(u.startswith("https://") for u in meta["urls"].values())
    assert 20 < len(meta["description"]) < 200 and "\n" not in meta["description"]


# --- --version -------------------------------------------------------------------------


@pytest.mark.slow
def test_version_prints_like_a_prometheus_binary() -> None:
    done = run(sys.executable, "-m", "exporter", "--version", cwd=REPO, env=dict(os.environ))
    fields = VERSION_LINES.fullmatch(done.stdout)
    assert fields, done.stdout
    assert fields["version"] == project()["project"]["version"]
    assert fields["python"] == buildinfo.python_version()
    assert fields["platform"] == buildinfo.platform()
    if (REPO / ".git").exists():
        # A checkout, not a build: the revision is the checked-out commit.
        head = run("git", "-C", REPO, "rev-parse", "HEAD").stdout.strip()
        assert fields["revision"] == head


@pytest.mark.parametrize(("system", "machine", "expected"), [
    ("linux", "x86_64", "linux/amd64"),
    ("linux", "aarch64", "linux/arm64"),
    ("linux2", "armv7l", "linux/arm"),
    ("darwin", "arm64", "darwin/arm64"),
    ("linux", "riscv64", "linux/riscv64"),
])
def test_platform_uses_gos_names(system: str, machine: str, expected: str) -> None:
    assert buildinfo.platform(system, machine) == expected


# --- lock files ---------------------------------------------------------------------------


def parse_lock(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (pinned version, hashes), from a pip-compile --generate-hashes file."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"{path.name}: option line {line!r}"
        requirement, *options = line.split()
        name, version = requirement.split("==")
        hashes = [o.removeprefix("--hash=sha256:") for o in options]
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), line
        entries[str(canonicalize_name(name))] = (version, hashes)
    return entries


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    locked = parse_lock(LOCK)
    for spec in project()["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = str(canonicalize_name(requirement.name))
        assert name in locked, f"{name} is a dependency but not in {LOCK.name}"
        version, _ = locked[name]
        assert requirement.specifier.contains(version), f"{name}=={version} vs {requirement}"
    assert all(hashes for _, hashes in locked.values())
    assert "token-health-exporter" not in locked


def test_build_lock_pins_the_build_backend() -> None:
    locked = parse_lock(BUILD_LOCK)
    for spec in project()["build-system"]["requires"]:
        requirement = Requirement(spec)
        version, hashes = locked[str(canonicalize_name(requirement.name))]
        assert requirement.specifier.contains(version) and hashes


def test_lock_parser_catches_a_missing_pin(tmp_path: Path) -> None:
    # Guards the tests above.
    bad = tmp_path / "bad.lock"
    bad.write_text("httpx>=0.27 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError):
        parse_lock(bad)


def manylinux(arch: str) -> list[str]:
    # Debian bookworm has glibc 2.36: wheels for any older manylinux fit.
    return [f"manylinux_2_{minor}_{arch}" for minor in (17, 28, 31, 34, 36)]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_locks_are_complete_and_their_hashes_match_the_index(tmp_path: Path, arch: str) -> None:
    """What the Dockerfile's installs do, for both image platforms, without installing.

    In --require-hashes mode pip refuses any dependency the files leave out and
    any file whose hash is not listed. --isolated: the default index only,
    whatever local mirrors this machine's pip configuration names.
    """
    report = tmp_path / "report.json"
    platforms = [arg for tag in manylinux(arch) for arg in ("--platform", tag)]
    run(sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "install",
        "--dry-run", "--quiet", "--ignore-installed", "--target", tmp_path / "target",
        "--require-hashes", "--only-binary=:all:", *platforms, "--python-version", "3.11",
        "--implementation", "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none",
        "-r", LOCK, "-r", BUILD_LOCK, "--report", report)
    resolved = {
        str(canonicalize_name(item["metadata"]["name"])): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    expected = {name: version for lock in (LOCK, BUILD_LOCK)
                for name, (version, _) in parse_lock(lock).items()}
    assert resolved == expected


# --- build, check, install ---------------------------------------------------------------


def source_copy(dest: Path) -> str:
    """The working tree's files (tracked and new, not ignored) as a fresh one-commit
    repository; returns the commit, which the build must bake in."""
    listed = run("git", "-C", REPO, "ls-files", "-z", "--cached", "--others",
                 "--exclude-standard").stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    git = ["git", "-C", str(dest), "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    run(*git, "init", "--quiet")
    run(*git, "add", "--all")
    run(*git, "commit", "--quiet", "--no-gpg-sign", "--message", "snapshot")
    return run(*git, "rev-parse", "HEAD").stdout.strip()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("source")
    return path, source_copy(path)


def baked(text: str) -> dict[str, str]:
    return dict(re.findall(r"^(\w+) = '([^']*)'$", text, flags=re.M))


@pytest.mark.slow
def test_build_and_twine_check_are_clean(source: tuple[Path, str], tmp_path: Path) -> None:
    path, commit = source
    dist = tmp_path / "dist"
    # sdist first, then the wheel from the unpacked sdist (no .git there): the
    # revision must travel inside the sdist.
    run(sys.executable, "-m", "build", "--outdir", dist, path)
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    version = project()["project"]["version"]
    assert wheel.name == f"token_health_exporter-{version}-py3-none-any.whl"
    done = run(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir())
    assert done.stdout.count("PASSED") == 2, done.stdout

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"token_health_exporter-{version}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        build = baked(archive.read("exporter/_build.py").decode())
    assert f"{info}/licenses/LICENSE" in names
    assert "exporter/py.typed" in names and "exporter/demo.yaml" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "deploy/"))]
    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata
    assert re.search(r"^Project-URL: Source, https://", metadata, flags=re.M)
    assert build["REVISION"] == commit
    commit_time = run("git", "-C", path, "log", "-1", "--format=%ct").stdout.strip()
    assert build["BUILD_DATE"] == time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(int(commit_time)))

    with tarfile.open(sdist) as archive:
        root = f"token_health_exporter-{version}"
        carried = archive.extractfile(f"{root}/exporter/_build.py")
        assert carried is not None
        assert baked(carried.read().decode())["REVISION"] == commit
        assert f"{root}/LICENSE" in archive.getnames()
    # The hooks never write into the source tree.
    assert not (path / "exporter" / "_build.py").exists()


@pytest.mark.slow
def test_pip_install_then_version_shows_the_revision(
    source: tuple[Path, str], tmp_path: Path,
) -> None:
    path, commit = source
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    bin_dir = environment / "bin"
    # Not editable: the package lands in site-packages, away from any checkout.
    run(bin_dir / "pip", "install", "--quiet", "--disable-pip-version-check", path)
    # From another directory, so nothing can come from the source copy.
    done = run(bin_dir / "token-health-exporter", "--version", cwd=tmp_path)
    fields = VERSION_LINES.fullmatch(done.stdout)
    assert fields, done.stdout
    assert fields["revision"] == commit
    assert fields["version"] == project()["project"]["version"]
    assert fields["date"] != "unknown"
    located = run(bin_dir / "python", "-c", "import exporter; print(exporter.__file__)",
                  cwd=tmp_path).stdout.strip()
    assert "site-packages" in located

    # A revision given at build time (what the Dockerfile does) wins over git.
    run(bin_dir / "pip", "install", "--quiet", "--disable-pip-version-check",
        "--force-reinstall", "--no-deps", path,
        env=clean_env(TOKEN_EXPORTER_REVISION="0123abc", SOURCE_DATE_EPOCH="0"))
    again = VERSION_LINES.fullmatch(
        run(bin_dir / "token-health-exporter", "--version", cwd=tmp_path).stdout)
    assert again and again["revision"] == "0123abc" and again["date"] == "19700101-00:00:00"
