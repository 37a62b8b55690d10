"""The metric-name contract, live: what the dashboard and the rules read is what
the exporter exports and Prometheus ingests, under the job the rules select."""

from __future__ import annotations

import httpx
import pytest

from tests.live.stack import (
    JOB,
    Exporter,
    Healthy,
    Prometheus,
    any_values,
    grafana_to_promql,
    prometheus_path,
    variable_selectors,
)
from tests.promclient import text_families
from tests.promql import (
    CONDITIONAL_METRICS,
    PROMETHEUS_SYNTHETIC,
    SPEC_METRICS,
    dashboard_exprs,
    load_rules,
    metric_names,
)

#: A real Prometheus server for the whole package: every test here is slow.
pytestmark = pytest.mark.slow


def test_missing_prometheus_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(AssertionError, match=r"apt-get install prometheus"):
        prometheus_path()


def live_sample_names(exporter: Exporter) -> set[str]:
    response = httpx.get(exporter.url + "/metrics", timeout=10, trust_env=False)
    assert response.status_code == 200
    return {s.name for family in text_families(response.text)
            for s in family.samples}


def test_every_metric_the_dashboard_and_rules_read_is_exported(
    exporter: Exporter, healthy: Healthy, prometheus: Prometheus
) -> None:
    exprs = [grafana_to_promql(e, any_values()) for e in dashboard_exprs()]
    exprs += [grafana_to_promql(sel, any_values()) for sel, _ in variable_selectors().values()]
    exprs += [str(rule["expr"]) for rule in load_rules()]
    used = set().union(*(metric_names(e) for e in exprs))
    # Sanity: the helper found counters and histogram series, whose names
    # carry suffixes the exposition must match exactly.
    assert {"oauth_token_valid", "oauth_token_refresh_failures_total",
            "oauth_probe_duration_seconds_count", "up"} <= used, used
    # Failure counters by class and last-error gauges appear only with a
    # failure, and no client certificate is configured here.
    used -= CONDITIONAL_METRICS
    needed = used - PROMETHEUS_SYNTHETIC
    exported = live_sample_names(exporter)
    assert needed - exported == set(), "read by the dashboard/rules but not exported"
    ingested = set(prometheus.api("label/__name__/values"))
    assert used - ingested == set(), "read by the dashboard/rules but not in Prometheus"


def test_spec_metric_list_matches_the_exporter(exporter: Exporter) -> None:
    # tests/promql.py's SPEC_METRICS is what the static checks allow; every
    # entry must be real. Series that exist only in some situations
    # (CONDITIONAL_METRICS) are left out: failure counters by class, last-error
    # gauges, certificates and discovery, which this set-up does not use.
    exported = live_sample_names(exporter)
    assert SPEC_METRICS - CONDITIONAL_METRICS - exported == set(), (
        "listed in tests/promql.py, not exported")
    # README lists this one; SPEC.md (and so tests/promql.py) does not.
    unlisted = {n for n in exported if n.startswith("oauth_")} - SPEC_METRICS
    assert unlisted <= {"oauth_exporter_config_last_reload_success_timestamp_seconds"}, (
        "exported but unknown to tests/promql.py (and SPEC.md): add it there")


def test_target_is_scraped_under_the_rules_job_name(
    prometheus: Prometheus, exporter: Exporter, healthy: Healthy
) -> None:
    targets = prometheus.api("targets")["activeTargets"]
    assert [(t["labels"]["job"], t["labels"]["instance"], t["health"], t["lastError"])
            for t in targets] == [(JOB, exporter.address, "up", "")]
