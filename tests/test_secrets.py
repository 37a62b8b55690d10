"""No client secret or access token in any output: metrics, landing page, logs
at debug level (text and JSON), error messages. Checked by grepping for the
actual values the exporter held."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from exporter.config import Config
from exporter.simulator import DEMO_CLIENTS, Simulation
from tests.harness import running_exporter, wait_for
from tests.scripted import free_port

SECRETS = [secret for _, secret in DEMO_CLIENTS.values()]


def assert_clean(text: str, values: list[str], where: str) -> None:
    leaked = [v for v in values if v in text]
    assert not leaked, f"{len(leaked)} secret value(s) found in {where}"


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
