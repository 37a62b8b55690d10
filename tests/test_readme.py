"""The README's two set-up commands: the first runs here, in a fresh virtual
environment in a copy of the repository; the second is what CI runs."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_starts_with_exactly_two_one_line_commands() -> None:
    text = (ROOT / "README.md").read_text()
    head = text.split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)\n```", head, flags=re.S)
    assert len(blocks) == 2, blocks
    assert all("\n" not in b for b in blocks)
    assert "--demo" in blocks[0]
    assert "apt-get install -y prometheus" in blocks[1] and "pytest" in blocks[1]


def test_ci_runs_the_second_command_and_nothing_else() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines()
                if line.strip() and not line.startswith("#")
                and line not in ("set -euo pipefail", 'cd "$(dirname "$0")/.."')]
    assert commands == [readme_commands()[1]]


def tracked_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


@pytest.mark.slow
def test_first_command_installs_and_serves_live_metrics(tmp_path: Path) -> None:
    """Run verbatim in a fresh copy: venv, install, demo on :10180."""
    tracked_copy(tmp_path)
    command = readme_commands()[0]
    proc = subprocess.Popen(["bash", "-c", command], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={k: v for k, v in os.environ.items()
                                 if not k.startswith("TOKEN_EXPORTER_")})
    metrics = ""
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.get("http://127.0.0.1:10180/metrics", timeout=2)
                if 'oauth_probe_success{probe="documents",provider="dokstamp-demo"} 1.0' in \
                        response.text:
                    metrics = response.text
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        landing = httpx.get("http://127.0.0.1:10180/", timeout=2).text if metrics else ""
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert metrics, f"no live metrics from the first README command:\n{output[-3000:]}"
    assert 'oauth_token_valid{provider="simpledocs-demo"} 1.0' in metrics
    assert "simplestore-demo" in landing
    assert "Landing page: http://127.0.0.1:10180/" in output
    assert (tmp_path / ".venv" / "bin" / "token-health-exporter").exists()
