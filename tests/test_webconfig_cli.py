"""--web.config.file on the command line: a broken file stops start-up and
--check-config with the file's own error, a good one is summarised, and a
started exporter serves TLS with basic auth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import wait_for
from tests.pki import Pki
from tests.scripted import free_port
from tests.webserving import (
    BAD_HASH,
    NO_PROVIDERS,
    PASSWORD,
    client_context,
    hashed,
    tls_block,
    write_web_config,
)

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, timeout=60, env=env, cwd=cwd, check=False)


@pytest.mark.slow
def test_cli_refuses_a_broken_web_config(pki: Pki, tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(NO_PROVIDERS)
    web = write_web_config(pki, "cli-bad.yml", f"basic_auth_users:\n  alice: '{BAD_HASH}'\n")
    proc = run_cli("--config.file", str(providers), "--web.config.file", str(web),
                   "--web.listen-address", "127.0.0.1:0", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    # A logfmt line: the message's quotes come out escaped.
    assert f'{web}:2:10: field \\"basic_auth_users.alice\\": not a bcrypt hash' in proc.stderr
    assert BAD_HASH not in proc.stderr

    check = run_cli("--check-config", "--config.file", str(providers),
                    "--web.config.file", str(web), cwd=tmp_path)
    assert check.returncode == 1
    assert 'field "basic_auth_users.alice"' in check.stderr

    missing = run_cli("--check-config", "--config.file", str(providers),
                      "--web.config.file", str(tmp_path / "nope.yml"), cwd=tmp_path)
    assert missing.returncode == 1 and "nope.yml: cannot read web config file" in missing.stderr


@pytest.mark.slow
def test_cli_check_config_summarises_a_good_web_config(pki: Pki, tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(NO_PROVIDERS)
    password_hash = hashed()
    web = write_web_config(pki, "cli-good.yml", tls_block("RequireAndVerifyClientCert")
                           + f"basic_auth_users:\n  prometheus: '{password_hash}'\n")
    proc = run_cli("--check-config", "--config.file", str(providers),
                   "--web.config.file", str(web), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{web}: web config OK" in proc.stdout
    assert "client_auth_type=RequireAndVerifyClientCert" in proc.stdout
    assert "basic auth: 1 user(s)" in proc.stdout
    assert password_hash not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_cli_serves_tls_and_basic_auth(pki: Pki, tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(NO_PROVIDERS)
    web = write_web_config(pki, "cli-serve.yml", tls_block()
                           + f"basic_auth_users:\n  prometheus: '{hashed()}'\n")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOKEN_EXPORTER_WEB_CONFIG_FILE": str(web)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(providers),
         "--web.listen-address", f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = f"https://127.0.0.1:{port}/metrics"

        def answer() -> httpx.Response | None:
            try:
                return httpx.get(url, verify=client_context(pki), timeout=5,
                                 auth=("prometheus", PASSWORD))
            except httpx.ConnectError:
                assert proc.poll() is None, proc.communicate()[1]
                return None

        resp = wait_for(answer, timeout=30, interval=0.1, message="the exporter to start")
        assert resp.status_code == 200 and "oauth_exporter_build_info" in resp.text
        denied = httpx.get(url, verify=client_context(pki), timeout=5)
        assert denied.status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert f"port {port}, https" in stderr
