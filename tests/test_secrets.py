"""No client secret or access token in any output: metrics, landing page, logs
at debug level (text and JSON), config errors, --check-config. Checked by
grepping for the actual values the exporter held.

The config paths feed known values through every door a secret comes in by:
an environment variable (in a secret field, a header, a token parameter, a
URL, and by mistake in a duration or a flag), a secret file, and URL userinfo
written literally."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from exporter.config import Config, ConfigError, parse_config
from exporter.logsetup import Redactor, setup_logging
from exporter.simulator import DEMO_CLIENTS, Simulation
from tests.harness import running_exporter, wait_for
from tests.scripted import Answer, forward_proxy, free_port, scripted_server

SECRETS = [secret for _, secret in DEMO_CLIENTS.values()]


def assert_clean(text: str, values: list[str], where: str) -> None:
    leaked = [v for v in values if v in text]
    assert not leaked, f"{len(leaked)} secret value(s) found in {where}"


@pytest.mark.slow
def test_in_process_outputs_hold_no_secret_or_token(demo: Config,
                                                    simulation: Simulation) -> None:
    with running_exporter(demo, log_level="debug") as h:
        wait_for(h.exporter.ready)
        # Walk through the failure paths too: they are where values leak.
        for sim in simulation.providers.values():
            sim.revoke_all()
        for name, probes in ((p.name, p.probes) for p in demo.providers):
            for probe in probes:
                h.call(h.exporter.probe_job(name, probe.name)())
        simulation.providers["simplifi"].set_faults(wrong_credentials=True)
        simulation.providers["simplestore"].set_faults(non_json=True)
        for name in ("simplifi-demo", "simplestore-demo"):
            h.call(h.exporter.renew_job(name)())
        outputs = {
            "metrics": h.get("/metrics").text,
            "openmetrics": httpx.get(h.url("/metrics"), headers={
                "Accept": "application/openmetrics-text"}).text,
            "landing page": h.get("/").text,
            "logs": h.logs.getvalue(),
        }
        tokens = list(h.tokens)
    assert len(tokens) >= 10  # first tokens plus the renewals after revocation
    assert "level=debug" in outputs["logs"] and "invalid_client" in outputs["logs"]
    for where, text in outputs.items():
        assert_clean(text, SECRETS, where)
        assert_clean(text, tokens, where)


@pytest.mark.slow
def test_cli_demo_at_debug_level_in_json_holds_no_secret() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--log.level", "debug",
         "--log.format", "json", "--web.listen-address", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(base + "/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=20, message="demo ready")
        time.sleep(1.0)  # let the first probes run
        metrics = httpx.get(base + "/metrics").text
        landing = httpx.get(base + "/").text
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr[-2000:]
    assert "oauth_probe_success" in metrics and "simpledocs-demo" in landing
    assert '"level": "debug"' in stderr  # JSON lines at debug level were written
    for where, text in {"metrics": metrics, "landing": landing, "stdout": stdout,
                        "stderr": stderr}.items():
        assert_clean(text, SECRETS, where)
        # DokStamp's access tokens are JWTs: none may appear anywhere.
        assert "eyJ" not in text, f"a JWT appeared in {where}"


# --------------------------------------------------------------------------- config paths

#: Environment values, each of which must never be printed in full.
ENV = {
    "CLIENT_ID": "client-id-from-env-4f1c",
    "CLIENT_SECRET": "client-secret-from-env-9b7e",
    "API_KEY": "api-key-from-env-2d8a",
    "TRACE": "trace-value-from-env-6c3b",
    "AUDIENCE": "audience-from-env-1e5f",
    "URL_PASSWORD": "url-password-from-env-7a0d",
}
#: Written literally in the file, in places that hold credentials.
LITERAL = ["literal-url-password-3c9e", "literal-probe-user-8b2f:literal-probe-pass-5d4a",
           "literal-proxy-pass-0a6c", "Bearer literal-auth-header-7e1b"]
FILE_SECRET = "secret-file-content-2f8d"
ALL = [*ENV.values(), *LITERAL, FILE_SECRET]
#: URL userinfo, other than the masked form.
USERINFO = re.compile(r"://(?!<redacted>@)[^/\s\"']*@")


def secret_config(base: str, secret_file: Path, proxy: str = "http://127.0.0.1:9") -> str:
    """Two providers whose every credential-carrying field holds a known value."""
    host = base.removeprefix("http://")
    proxy_host = proxy.removeprefix("http://")
    return f"""\
providers:
  - name: from-env
    token_url: http://tokens:${{URL_PASSWORD}}@{host}/token
    client_id: ${{CLIENT_ID}}
    client_secret: ${{CLIENT_SECRET}}
    headers: {{X-Api-Key: "${{API_KEY}}", X-Trace: "${{TRACE}}"}}
    token_params: {{audience: "${{AUDIENCE}}"}}
    probes:
      - name: api
        url: http://literal-probe-user-8b2f:literal-probe-pass-5d4a@{host}/api
        headers: {{Authorization: Bearer literal-auth-header-7e1b}}
  - name: from-file
    token_url: http://tokens:literal-url-password-3c9e@{host}/refused
    client_id: file-client
    client_secret_file: {secret_file}
    proxy_url: http://proxy:literal-proxy-pass-0a6c@{proxy_host}
    backoff_initial: 1h
    backoff_max: 1h
"""


def assert_no_secret(text: str, where: str) -> None:
    assert_clean(text, ALL, where)
    # Parts of a value would do harm too: any 12-character run of one.
    for value in ALL:
        for i in range(0, len(value) - 12):
            assert value[i:i + 12] not in text, f"part of a secret found in {where}"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "client.secret"
    path.write_text(FILE_SECRET + "\n")
    return path


def test_config_secrets_cover_every_sensitive_value(secret_file: Path) -> None:
    config = parse_config(secret_config("http://127.0.0.1:1", secret_file), "p.yaml", ENV)
    held = config.secrets()
    missing = [v for v in ALL if not any(v in h or h in v for h in held)]
    assert not missing, f"{len(missing)} value(s) not handed to the redactor"
    # Published by design, so never redacted: names, preset, the host.
    assert "from-env" not in held and "127.0.0.1:1" not in held


BROKEN = {
    # field -> a value holding the secret, by mistake
    "timeout": "${CLIENT_SECRET}",
    "probe_interval": "5${CLIENT_SECRET}",
    "renew_at_fraction": "${CLIENT_SECRET}",
    "allow_insecure_http": "${CLIENT_SECRET}",
    "preset": "${CLIENT_SECRET}",
    "token_rate_limit": "${CLIENT_SECRET}/1m",
    "client_secret_expires_at": "${CLIENT_SECRET}",
    "name": "${CLIENT_SECRET}",
    "token_url": "https://u:${URL_PASSWORD}@host with space/",
    "proxy_url": "ftp://u:literal-proxy-pass-0a6c@proxy/",
    "revocation_url": "https://literal-probe-user-8b2f:literal-probe-pass-5d4a@x y/",
    "client_secret": "{a: \"${MISSING:-${CLIENT_SECRET}}\"}",
    "client_id": "${CLIENT_SECRET:?never printed}${NOT_SET}",
    "headers": "{X-Api-Key: [\"${API_KEY}\"]}",
    "token_params": "{grant_type: \"${AUDIENCE}\"}",
    "probes": "[{name: a, url: 'https://x/a', expect_status: [\"${CLIENT_SECRET}\"]}]",
    "tls": "{ca_file: \"/nonexistent/${CLIENT_SECRET}\"}",
    "scope": "${CLIENT_SECRET}",
}


@pytest.mark.parametrize(("field", "value"), BROKEN.items(), ids=BROKEN.keys())
def test_config_errors_never_show_a_secret(field: str, value: str) -> None:
    lines = ["providers:", "  - name: p", "    preset: smartdocumentor", "    client_id: i",
             "    client_secret: s"]
    lines = [line for line in lines if not line.startswith(f"    {field}:")]
    text = "\n".join([*lines, f"    {field}: {value}"]) + "\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "p.yaml", ENV)
    message = str(info.value)
    assert message.startswith("p.yaml:"), message
    assert f'field "{field}' in message, message
    assert_no_secret(message, f"the error for {field}")
    assert not USERINFO.search(message), message


@pytest.mark.slow
def test_check_config_shows_no_secret_and_masks_userinfo(secret_file: Path,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(secret_config("http://127.0.0.1:1", secret_file))
    env = {**os.environ, **ENV}
    ok = subprocess.run([sys.executable, "-m", "exporter", "--check-config", "--config.file",
                         str(path)], capture_output=True, text=True, env=env, timeout=60,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    assert "2 provider(s) OK" in ok.stdout
    # A URL read from the environment is hidden whole; a literal one loses its userinfo.
    assert "token_url=http://<redacted>@127.0.0.1:1/refused" in ok.stdout
    assert_no_secret(ok.stdout + ok.stderr, "--check-config output")

    path.write_text(path.read_text().replace("backoff_max: 1h", "backoff_max: ${API_KEY}"))
    bad = subprocess.run([sys.executable, "-m", "exporter", "--check-config", "--config.file",
                          str(path)], capture_output=True, text=True, env=env, timeout=60,
                         check=False)
    assert bad.returncode == 1
    assert 'field "backoff_max": invalid duration' in bad.stderr
    assert "(from ${API_KEY}; value not shown)" in bad.stderr
    assert_no_secret(bad.stdout + bad.stderr, "--check-config error")


@pytest.mark.slow
def test_running_exporter_outputs_hold_no_config_secret(secret_file: Path) -> None:
    script = {"/token": Answer(200, {"access_token": "at-1", "token_type": "Bearer",
                                     "expires_in": 3600}),
              "/api": Answer(200, {"ok": True}),
              "/refused": Answer(401, {"error": "invalid_client"})}
    with scripted_server(script) as base, forward_proxy() as (proxy, proxied):
        config = secret_config(base, secret_file, proxy)
        with running_exporter(config, env=ENV, log_level="debug") as h:
            wait_for(h.exporter.ready)
            wait_for(lambda: h.value("oauth_probe_attempts_total", provider="from-env",
                                     probe="api"), message="the first probe")
            h.call(h.exporter.renew_job("from-file")())
            metrics = h.get("/metrics").text
            openmetrics = httpx.get(h.url("/metrics"), headers={
                "Accept": "application/openmetrics-text"}).text
            landing = h.get("/").text
            logs = h.logs.getvalue()
        assert h.value("oauth_probe_success", provider="from-env", probe="api") == 1.0
        assert ("POST", "/refused") in base.hits  # the failing path was walked
        assert [method for method, _ in proxied] == ["POST", "POST"]
    assert "invalid_client" in logs and "level=debug" in logs
    assert 'token_host="127.0.0.1:' in metrics
    for where, text in {"metrics": metrics, "openmetrics": openmetrics, "landing page": landing,
                        "logs": logs}.items():
        assert_no_secret(text, where)
        assert not USERINFO.search(text), f"URL userinfo in {where}"


def test_a_log_line_from_anywhere_is_redacted() -> None:
    """What a library logs (an exception, a URL) goes through the same redactor."""
    config = parse_config(secret_config("http://127.0.0.1:1", Path("/dev/null")).replace(
        "client_secret_file: /dev/null", "client_secret: x"), "p.yaml", ENV)
    redactor = Redactor()
    redactor.add(*config.secrets())
    stream = io.StringIO()
    handler = setup_logging("debug", "json", redactor, stream=stream)
    try:
        logger = logging.getLogger("some.library")
        # A library's line at warning: libraries' debug lines are not written.
        logger.warning("GET https://someone:hunter2-%s@api.example/v1 with key %s", "x",
                     ENV["API_KEY"])
        try:
            raise ValueError(f"bad header value {ENV['TRACE']!r}")
        except ValueError:
            logger.exception("request failed for %s", ENV["CLIENT_ID"])
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()
    assert "api.example/v1" in text and "request failed" in text
    assert_no_secret(text, "log lines")
    assert "hunter2" not in text and "someone" not in text
