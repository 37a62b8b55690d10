"""The live set-up, started once for the package: simulators, the exporter,
Prometheus, and the ``healthy`` snapshot every health check reads."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.simulator import SimulatedProvider
from tests.live.stack import (
    JOB,
    PROVIDERS,
    REPO,
    RULE_FOR,
    SCRAPE_INTERVAL,
    STARTUP_TIMEOUT,
    WARMUP_TIMEOUT,
    Exporter,
    Healthy,
    Process,
    Prometheus,
    any_values,
    client_credentials,
    exporter_config,
    grafana_to_promql,
    live_values,
    prometheus_path,
    renewed_everywhere,
    secret_env,
    shorten_for,
    wait_until,
)
from tests.promql import RULES_FILE, dashboard_keyed_targets, load_rules
from tests.promtool import run_promtool
from tests.scripted import free_port


@pytest.fixture(scope="package")
def simulators() -> Iterator[dict[str, SimulatedProvider]]:
    """The five providers, in this process. SimpleDocs keeps its 10 token
    requests/min limit: 24 s tokens renewed at ~2/3 of their life stay well
    under it."""
    started: dict[str, SimulatedProvider] = {}
    try:
        for setup in PROVIDERS:
            sim = SimulatedProvider(setup.kind, host="127.0.0.1", lifetime=setup.lifetime)
            sim.add_client(*client_credentials(setup.kind))
            started[setup.kind] = sim.start()
        yield started
    finally:
        for sim in started.values():
            sim.stop()


@pytest.fixture(scope="package")
def exporter(simulators: dict[str, SimulatedProvider],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    workdir = tmp_path_factory.mktemp("exporter")
    config = workdir / "providers.yaml"
    config.write_text(yaml.safe_dump(exporter_config(simulators), sort_keys=False))
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_EXPORTER_")}
    env.update(secret_env(), PYTHONUNBUFFERED="1")
    process = Process.start(
        "the exporter",
        [sys.executable, "-m", "exporter", "--config.file", str(config),
         "--web.listen-address", address, "--log.level", "info"],
        workdir / "exporter.log", cwd=REPO, env=env,
    )
    try:
        running = Exporter(process, address)
        with httpx.Client(timeout=5, trust_env=False) as client:

            def ready() -> bool:
                process.assert_alive()
                try:
                    return client.get(running.url + "/-/ready").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(ready, STARTUP_TIMEOUT, "the exporter's /-/ready")
        yield running
    finally:
        process.stop()


@pytest.fixture(scope="package")
def rules_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alerts/token-health.rules.yml with every ``for:`` shortened to RULE_FOR."""
    path = tmp_path_factory.mktemp("rules") / "token-health.rules.yml"
    doc = yaml.safe_load(RULES_FILE.read_text())
    path.write_text(yaml.safe_dump(shorten_for(doc, RULE_FOR), sort_keys=False))
    done = run_promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    return path


@pytest.fixture(scope="package")
def prometheus(exporter: Exporter, rules_copy: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = prometheus_path()
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(rules_copy)],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [exporter.address]}]},
        ],
    }, sort_keys=False))
    checked = run_promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    address = f"127.0.0.1:{free_port()}"
    process = Process.start(
        "prometheus",
        [str(binary), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address={address}", "--log.level=info"],
        workdir / "prometheus.log", cwd=workdir,
    )
    client = httpx.Client(base_url=f"http://{address}", timeout=10, trust_env=False)
    try:

        def ready() -> bool:
            process.assert_alive()
            try:
                return client.get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, STARTUP_TIMEOUT, "Prometheus's /-/ready")
        yield Prometheus(process, client)
    finally:
        client.close()
        process.stop()


@pytest.fixture(scope="package")
def healthy(prometheus: Prometheus, exporter: Exporter) -> Healthy:
    """Wait until the set-up is warm, watching the alerts, then query everything."""
    up = f'up{{job="{JOB}"}}'

    def scraped() -> bool:
        prometheus.process.assert_alive()
        exporter.process.assert_alive()
        targets = [t for t in prometheus.api("targets")["activeTargets"]
                   if t["labels"].get("job") == JOB]
        if not (len(targets) == 1 and targets[0]["health"] == "up"):
            return False
        count = prometheus.vector(f"count_over_time({up}[1m])")
        return bool(count) and count[0].value >= 3

    wait_until(scraped, STARTUP_TIMEOUT, f"Prometheus to scrape {exporter.address} three times")

    # From here on nothing may alert: collect every active alert while waiting
    # for each provider's first renewal (so rate() panels have data).
    alerts_seen: list[dict[str, Any]] = []
    started = time.monotonic()

    def warm() -> bool:
        exporter.process.assert_alive()
        alerts_seen.extend(prometheus.active_alerts())
        return renewed_everywhere(prometheus)

    wait_until(warm, WARMUP_TIMEOUT, "a token renewal of every provider, seen by Prometheus",
               interval=0.5)

    variables = {"any": any_values(), "live": live_values(exporter)}
    dashboard = {
        (i, mode): prometheus.query(grafana_to_promql(expr, values))
        for i, (_, expr) in enumerate(dashboard_keyed_targets())
        for mode, values in variables.items()
    }
    rules = {rule["alert"]: prometheus.query(str(rule["expr"]))
             for rule in load_rules() if "alert" in rule}
    rule_groups = prometheus.api("rules")["groups"]
    end = time.time()
    time_left_expr = grafana_to_promql(
        dict(dashboard_keyed_targets())["Token time left"], variables["live"])
    time_left = prometheus.api("query_range", query=time_left_expr, start=str(end - 40),
                               end=str(end), step="1")["result"]
    alerts_seen.extend(prometheus.active_alerts())
    return Healthy(dashboard, rules, rule_groups, alerts_seen, time.monotonic() - started,
                   time_left)
