"""A fault, live: one provider's credentials stop working; the right alert fires
for it alone, the root-cause hierarchy holds the rest back, the dashboard shows
it, and all resolves when the fault is cleared. Last by name in the package, so
that its final test, which reads both logs, covers the fault too."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.simulator import SimulatedProvider
from tests.live.stack import (
    ALERT_RULES,
    ALERT_TIMEOUT,
    BY_NAME,
    FAULTY,
    JOB,
    PROBES,
    TARGETS,
    Exporter,
    Healthy,
    Prometheus,
    Sample,
    client_credentials,
    grafana_to_promql,
    live_values,
    log_tail,
    wait_until,
)

#: A real Prometheus server for the whole package: every test here is slow.
pytestmark = pytest.mark.slow


def panel_samples(prometheus: Prometheus, exporter: Exporter, key: str,
                  rate_interval: str | None = None) -> list[Sample]:
    (expr,) = [e for k, e in TARGETS if k == key]
    return prometheus.vector(grafana_to_promql(expr, live_values(exporter), rate_interval))


def alert_expr(name: str) -> str:
    (expr,) = [str(r["expr"]) for r in ALERT_RULES if r["alert"] == name]
    return expr


HOLD = "\n)\nunless on (cluster, job, instance, provider)\n(\n"


def without_hierarchy(expr: str) -> str:
    """An alert expression without its root-cause hierarchy clause: the
    alert's own condition (docs/alerts.md)."""
    assert expr.count(HOLD) == 1, expr
    own = expr.split(HOLD)[0]
    assert own.startswith("(\n")
    return own[2:]


def test_wrong_credentials_raise_no_valid_token_for_that_provider_only(
    healthy: Healthy, prometheus: Prometheus, exporter: Exporter,
    simulators: dict[str, SimulatedProvider],
) -> None:
    sim = simulators[FAULTY.kind]
    seen: list[dict[str, Any]] = []

    def no_valid_token_firing() -> list[dict[str, Any]]:
        exporter.process.assert_alive()
        alerts = prometheus.active_alerts()
        seen.extend(alerts)
        return [a for a in alerts if a["labels"]["alertname"] == "TokenHealthNoValidToken"
                and a["state"] == "firing"]

    sim.set_faults(wrong_credentials=True)
    try:
        # Revoking makes the next probe fail with invalid_token, so the
        # exporter asks the token endpoint at once instead of at renewal time.
        sim.revoke_all()
        firing = wait_until(no_valid_token_firing, ALERT_TIMEOUT,
                            "TokenHealthNoValidToken to fire", interval=0.5)
        assert [a["labels"] for a in firing] == [{
            "alertname": "TokenHealthNoValidToken", "severity": "critical", "layer": "token",
            "job": JOB, "instance": exporter.address, "provider": FAULTY.name}]
        assert "<error expanding template" not in str(firing[0]["annotations"])
        description = firing[0]["annotations"]["description"]
        assert FAULTY.name in description and "invalid_client" in description

        # The dashboard shows it.
        assert [s.value for s in panel_samples(
            prometheus, exporter, "Providers without a valid token")] == [1]
        status = {s.labels["provider"]: s for s in panel_samples(
            prometheus, exporter, "Credential status#A")}
        assert (status[FAULTY.name].value, status[FAULTY.name].labels["runs_out"]) == (
            0, "no valid token")
        failures = panel_samples(prometheus, exporter, "Token request failures by class")
        assert {(s.labels["provider"], s.labels["error"]) for s in failures} == {
            (FAULTY.name, "invalid_client")}
        # Probe runs skipped for want of a token (error="no_token") count as
        # failed runs in the dashboard's ratio; it must stay a ratio (below 1
        # for the broken provider, 1 elsewhere), never -Inf or NaN.
        def skipped() -> list[Sample]:
            return prometheus.vector(
                f'oauth_probe_failures_total{{provider="{FAULTY.name}",error="no_token"}}')

        wait_until(skipped, ALERT_TIMEOUT, "a probe run skipped with no_token")
        ratios = {(s.labels["provider"], s.labels["probe"]): s.value
                  for s in panel_samples(prometheus, exporter, "Probe success ratio (1h)")}
        assert set(ratios) == PROBES
        for key, ratio in ratios.items():
            if key[0] == FAULTY.name:
                assert 0 <= ratio < 1, (key, ratio)
            else:
                assert ratio == 1, (key, ratio)

        # TokenHealthCredentialsRejected: its own condition selects exactly
        # this provider with the right class, but the hierarchy holds it back
        # while the provider has no valid token: one page, not two.
        def rejected_condition() -> list[Sample]:
            return prometheus.vector(
                without_hierarchy(alert_expr("TokenHealthCredentialsRejected")))

        rejected = wait_until(rejected_condition, ALERT_TIMEOUT,
                              "invalid_client as the last token error in Prometheus")
        assert [(s.labels["provider"], s.labels["error"]) for s in rejected] == [
            (FAULTY.name, "invalid_client")]
        assert prometheus.vector(alert_expr("TokenHealthCredentialsRejected")) == []
        seen.extend(prometheus.active_alerts())
    finally:
        sim.clear_faults()

    others = sorted({(a["labels"]["alertname"], a["labels"].get("provider", "-"))
                     for a in seen if a["labels"].get("provider") != FAULTY.name})
    assert others == [], "alerts for providers that were never broken"
    # A probe's own failure (invalid_token) shows before the token is dropped,
    # so TokenHealthApiRefusesToken or TokenHealthProbeFailing may be pending
    # for a moment; nothing but the missing token may fire.
    assert {a["labels"]["alertname"] for a in seen if a["state"] == "firing"} == {
        "TokenHealthNoValidToken"}

    # Fixed credentials: the next retry (backoff at most 1 s) gets a token.
    def recovered() -> bool:
        valid = prometheus.vector(f'oauth_token_valid{{provider="{FAULTY.name}"}}')
        alerts = [a for a in prometheus.active_alerts()
                  if a["labels"].get("provider") == FAULTY.name]
        return [s.value for s in valid] == [1] and not alerts

    wait_until(recovered, ALERT_TIMEOUT, f"{FAULTY.name} to recover and its alerts to resolve")


def test_logs_show_no_errors(exporter: Exporter, prometheus: Prometheus, healthy: Healthy) -> None:
    # Last in the package, so it also covers the fault above when that ran.
    exporter_log = exporter.process.log.read_text()
    assert "Traceback" not in exporter_log and " ERROR " not in exporter_log, log_tail(
        exporter.process.log)
    for kind in BY_NAME.values():
        assert client_credentials(kind.kind)[1] not in exporter_log, "a client secret was logged"
    prometheus_log = prometheus.process.log.read_text().splitlines()
    problems = [line for line in prometheus_log
                if "level=error" in line or "template" in line.lower()]
    assert problems == []
