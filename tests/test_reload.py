"""Config reload (SIGHUP and POST /-/reload) and graceful shutdown, on the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from exporter.simulator import SimulatedProvider
from tests.harness import wait_for
from tests.scripted import free_port

SECRET = "reload-secret-Vb2"


def provider(sim: SimulatedProvider, name: str, probes: int = 1, **extra: str) -> str:
    path = {"simplestore": "/api/v1/products", "smartdocumentor": "/api/v1/templates",
            "simplifi": "/api/v1/employees", "simpledocs": "/v1/documents"}[sim.kind]
    lines = [f"  - name: {name}", f"    preset: {sim.kind}", f"    token_url: {sim.token_url}",
             "    client_id: app", f"    client_secret: {SECRET}", "    probe_interval: 500ms"]
    lines += [f"    {k}: {v}" for k, v in extra.items()]
    lines.append("    probes:")
    for i in range(probes):
        # Below the 500 ms interval, as the config requires; token requests keep 10 s.
        lines += [f"      - name: p{i}", f"        url: {sim.base_url}{path}",
                  "        timeout: 400ms"]
    return "\n".join(lines) + "\n"


class Process:
    def __init__(self, config: Path, *extra: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--config.file", str(config),
             "--web.listen-address", f"127.0.0.1:{self.port}", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for(self.ready, timeout=20, message="exporter ready")

    def ready(self) -> bool:
        try:
            return httpx.get(self.base + "/-/ready").status_code == 200
        except httpx.TransportError:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            return False

    def metrics(self) -> str:
        return httpx.get(self.base + "/metrics").text

    def value(self, series: str) -> float | None:
        for line in self.metrics().splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        _, stderr = self.proc.communicate(timeout=20)
        return self.proc.returncode, stderr


@pytest.fixture
def sims() -> Iterator[dict[str, SimulatedProvider]]:
    started = {k: SimulatedProvider(k).start() for k in ("simplestore", "smartdocumentor",
                                                           "simplifi")}
    for sim in started.values():
        sim.add_client("app", SECRET)
    try:
        yield started
    finally:
        for sim in started.values():
            sim.stop()


@pytest.mark.slow
def test_reload_keeps_tokens_and_rejects_bad_configs(tmp_path: Path,
                                                     sims: dict[str, SimulatedProvider]) -> None:
    a, b, c = sims["simplestore"], sims["smartdocumentor"], sims["simplifi"]
    config = tmp_path / "providers.yaml"
    config.write_text("providers:\n" + provider(a, "a") + provider(b, "b"))
    exporter = Process(config)
    try:
        assert len(a.token_requests()) == 1 and len(b.token_requests()) == 1
        assert exporter.value("oauth_exporter_config_last_reload_successful") == 1.0

        # A valid change by SIGHUP: a's probes change (its credential does not),
        # b is removed, c is added.
        config.write_text("providers:\n" + provider(a, "a", probes=2) + provider(c, "c"))
        exporter.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: 'provider="c"' in exporter.metrics(), timeout=10, message="c appears")
        wait_for(lambda: exporter.value('oauth_probe_attempts_total{probe="p1",provider="a"}'),
                 timeout=10, message="a's new probe runs")
        text = exporter.metrics()
        assert 'provider="b"' not in text  # removed provider's series are gone
        assert len(a.token_requests()) == 1  # unchanged credential: no new token request
        assert exporter.value('oauth_token_valid{provider="a"}') == 1.0
        assert len(c.token_requests()) == 1
        assert exporter.value("oauth_exporter_config_last_reload_successful") == 1.0

        # An invalid change by POST /-/reload: refused, the old config keeps running.
        good = config.read_text()
        config.write_text(good.replace("    probe_interval: 500ms\n",
                                       "    probe_interval: 500ms\n    colour: blue\n", 1))
        answer = httpx.post(exporter.base + "/-/reload")
        assert answer.status_code == 500
        assert 'provider "a": field "colour": unknown key' in answer.text
        assert SECRET not in answer.text
        assert exporter.value("oauth_exporter_config_last_reload_successful") == 0.0
        before = exporter.value('oauth_probe_attempts_total{probe="p0",provider="c"}') or 0
        wait_for(lambda: (exporter.value('oauth_probe_attempts_total{probe="p0",provider="c"}')
                          or 0) > before, timeout=5, message="old config still probing")
        assert len(a.token_requests()) == 1 and len(c.token_requests()) == 1

        # Fixed again: the metric recovers.
        config.write_text(good)
        assert httpx.post(exporter.base + "/-/reload").status_code == 200
        assert exporter.value("oauth_exporter_config_last_reload_successful") == 1.0
    finally:
        code, stderr = exporter.stop()
    assert code == 0, stderr[-3000:]
    assert "config reload failed" in stderr and "colour" in stderr
    assert "shutting down" in stderr
    assert SECRET not in stderr


@pytest.mark.slow
def test_sigterm_revokes_tokens_when_asked(tmp_path: Path) -> None:
    with SimulatedProvider("simpledocs") as sim:
        sim.add_client("app", SECRET, scopes="read")
        config = tmp_path / "providers.yaml"
        config.write_text("providers:\n" + provider(sim, "sd", revoke_on_shutdown="true"))
        exporter = Process(config)
        wait_for(lambda: exporter.value('oauth_probe_success{probe="p0",provider="sd"}') == 1)
        assert sim.active_token_count() == 1
        started = time.monotonic()
        code, stderr = exporter.stop()
        assert time.monotonic() - started < 10
        assert code == 0, stderr
        assert "token revoked at shutdown" in stderr
        revocations = [r for r in sim.api_requests() if r.path == "/oauth/revoke"]
        assert [r.status for r in revocations] == [200]
        assert sim.active_token_count() == 0  # no token outlives the exporter
        assert SECRET not in stderr
