"""The Grafana dashboard and its provisioning example, checked statically.

Every query must parse (promtool reads them as recording rules), read only the
exporter's metrics, honour the job/instance/provider variables, and use
counters only inside rate()/increase() over ``$__rate_interval``.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import (
    DASHBOARD_FILE,
    PROMETHEUS_SYNTHETIC,
    SPEC_METRICS,
    counter_violations,
    dashboard_exprs,
    dashboard_targets,
    iter_panels,
    load_dashboard,
    metric_names,
    selectors,
    substitute_grafana_variables,
)
from tests.promtool import run_promtool

REPO = Path(__file__).resolve().parent.parent
PROVISIONING = REPO / "dashboards" / "provisioning"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Grafana unit ids the panels may use; a typo would silently show raw numbers.
UNITS = {"none", "short", "s", "d", "reqps", "percentunit", "bool"}
# Metrics without a provider label.
EXPORTER_LEVEL = {"up", "oauth_exporter_build_info", "oauth_exporter_config_last_reload_successful"}
REQUIRED_PANELS = {
    "Exporter up",
    "Valid tokens",
    "Providers without a valid token",
    "Token time left",
    "Next renewal in",
    "Token refresh failures by error class",
    "Token request latency",
    "Probe success",
    "Probe latency (p95)",
    "Probe failures by error class",
    "Client secrets by days left",
}

DASHBOARD = load_dashboard()
PANELS = [p for p in iter_panels(DASHBOARD["panels"]) if p.get("type") != "row"]
PANEL_IDS = [p.get("title", "?") for p in PANELS]
TARGETS = dashboard_targets()
TARGET_IDS = [f"{title}#{i}" for i, (title, _) in enumerate(TARGETS)]


def variable(name: str) -> dict[str, Any]:
    for var in DASHBOARD["templating"]["list"]:
        if var["name"] == name:
            return dict(var)
    raise AssertionError(f"no dashboard variable {name!r}")


def query_text(var: dict[str, Any]) -> str:
    query = var["query"]
    return str(query["query"] if isinstance(query, dict) else query)


# ------------------------------------------------------------------ dashboard


def test_identity() -> None:
    assert DASHBOARD["uid"] == "token-health"
    assert DASHBOARD["title"]
    assert "token-health" in DASHBOARD["tags"] and len(DASHBOARD["tags"]) >= 2
    assert DASHBOARD["schemaVersion"] >= 38
    assert "id" not in DASHBOARD or DASHBOARD["id"] is None, "a provisioned dashboard has no id"


def test_variables_are_chained() -> None:
    names = [var["name"] for var in DASHBOARD["templating"]["list"]]
    assert names == ["datasource", "job", "instance", "provider"]
    ds = variable("datasource")
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    previous: list[str] = []
    for name in ("job", "instance", "provider"):
        var = variable(name)
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        assert var["multi"] is True and var["includeAll"] is True
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query_text(var))
        assert match, query_text(var)
        assert match.group(2) == name
        assert metric_names(match.group(1)) <= SPEC_METRICS
        for earlier in previous:  # each variable is narrowed by the ones before it
            assert f'{earlier}=~"${earlier}"' in match.group(1), (name, earlier)
        previous.append(name)


def test_required_panels_exist() -> None:
    assert set(PANEL_IDS) >= REQUIRED_PANELS, REQUIRED_PANELS - set(PANEL_IDS)


def test_panel_ids_unique_and_layout_does_not_overlap() -> None:
    every = list(iter_panels(DASHBOARD["panels"]))
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids)), ids
    boxes = [(p["title"], p["gridPos"]) for p in every]
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        overlap = (
            a["x"] < b["x"] + b["w"]
            and b["x"] < a["x"] + a["w"]
            and a["y"] < b["y"] + b["h"]
            and b["y"] < a["y"] + a["h"]
        )
        assert not overlap, f"panels {ta!r} and {tb!r} overlap"
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in every)


@pytest.mark.parametrize("panel", PANELS, ids=PANEL_IDS)
def test_panel_has_title_description_unit_datasource(panel: dict[str, Any]) -> None:
    assert panel.get("title", "").strip()
    assert len(panel.get("description", "").strip()) >= 20
    unit = panel["fieldConfig"]["defaults"].get("unit")
    assert unit in UNITS, f"unit {unit!r}"
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"], "a panel without a query"
    refs = [t["refId"] for t in panel["targets"]]
    assert len(refs) == len(set(refs))
    for target in panel["targets"]:
        assert target["datasource"] == DATASOURCE
        assert target["expr"].strip()


def test_rows_hold_no_queries() -> None:
    for row in (p for p in iter_panels(DASHBOARD["panels"]) if p.get("type") == "row"):
        assert row["title"] and not row.get("targets")


# -------------------------------------------------------------------- queries


@pytest.mark.parametrize(("title", "expr"), TARGETS, ids=TARGET_IDS)
def test_rates_use_rate_interval(title: str, expr: str) -> None:
    ranges = [s.range for s in selectors(expr) if s.range is not None]
    if re.search(r"\b(rate|irate|increase)\s*\(", expr):
        assert ranges, "rate()/increase() without a range selector"
    assert all(r == "$__rate_interval" for r in ranges), ranges


@pytest.mark.parametrize(("title", "expr"), TARGETS, ids=TARGET_IDS)
def test_counters_only_inside_rate_or_increase(title: str, expr: str) -> None:
    assert counter_violations(expr) == []


@pytest.mark.parametrize(("title", "expr"), TARGETS, ids=TARGET_IDS)
def test_queries_read_known_metrics_and_honour_variables(title: str, expr: str) -> None:
    sels = selectors(expr)
    assert sels, "the query reads no metric"
    for sel in sels:
        assert sel.name in SPEC_METRICS | PROMETHEUS_SYNTHETIC, sel.name
        assert sel.matcher("job") == ("=~", '"$job"'), sel
        assert sel.matcher("instance") == ("=~", '"$instance"'), sel
        if sel.name not in EXPORTER_LEVEL:
            assert sel.matcher("provider") == ("=~", '"$provider"'), sel


def test_every_query_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    rules = [
        {"record": f"dashboard:query{i}:expr", "expr": substitute_grafana_variables(expr)}
        for i, expr in enumerate(exprs)
    ]
    assert not any("$" in rule["expr"] for rule in rules), rules
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = run_promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_a_broken_query_is_caught(tmp_path: Path) -> None:
    # The parse check above can fail: promtool rejects an unbalanced query.
    path = tmp_path / "broken.rules.yml"
    broken = {"record": "dashboard:broken", "expr": "sum(rate(oauth_probe_attempts_total[5m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [broken]}]}))
    assert run_promtool("check", "rules", str(path)).returncode != 0


# ------------------------------------------------------------- provisioning


def test_dashboard_provider_points_at_a_container_path() -> None:
    text = (PROVISIONING / "dashboards.yml").read_text()
    doc = yaml.safe_load(text)
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert "container" in text, "the comment should say the path is inside the container"


def test_example_datasource_is_prometheus() -> None:
    doc = yaml.safe_load((PROVISIONING / "datasources.yml").read_text())
    assert doc["apiVersion"] == 1
    prometheus = [ds for ds in doc["datasources"] if ds["type"] == "prometheus"]
    assert len(prometheus) == 1 and prometheus[0]["url"].startswith("http")
    assert prometheus[0].get("isDefault") is True


def test_dashboard_file_is_where_provisioning_and_docs_expect_it() -> None:
    assert DASHBOARD_FILE == REPO / "dashboards" / "token-health.json"
    assert DASHBOARD_FILE.read_text().endswith("\n")


# ---------------------------------------------------------------- the helpers


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        ('up{job="x"} == 0', {"up"}),
        (
            'sum by (provider, error) (rate(oauth_probe_failures_total{job=~"$job"}'
            "[$__rate_interval])) > 0",
            {"oauth_probe_failures_total"},
        ),
        (
            "histogram_quantile(0.99, sum without (instance) "
            "(rate(oauth_token_refresh_duration_seconds_bucket[5m])))",
            {"oauth_token_refresh_duration_seconds_bucket"},
        ),
        (
            "a_metric unless on (job, provider) group_left (preset) b_metric offset 5m "
            "and ignoring(error) c:recorded:rate5m or bool 1e3",
            {"a_metric", "b_metric", "c:recorded:rate5m"},
        ),
        ('absent(x{job="y"}) or vector(0) * time()', {"x"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        ('{__name__="by_matcher", provider="p"}', {"by_matcher"}),
        ("max_over_time(g[1h:5m]) - (sum(h) by (le))", {"g", "h"}),
        ("count(oauth_token_valid == 0) or vector(0)", {"oauth_token_valid"}),
        ("(x - time()) / 86400 < 28 * 86400 # a comment naming not_a_metric", {"x"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_counter_violations() -> None:
    assert counter_violations("rate(a_total[5m]) + increase(b_bucket[1h])") == []
    assert counter_violations("sum(a_total)") == ["a_total"]
    assert counter_violations("sum by (x) (a_count) / rate(a_sum[5m])") == ["a_count"]
    assert counter_violations("rate(sum(a_total)[5m:])") == ["a_total"]
    assert counter_violations("a_total > 0") == ["a_total"]
    assert counter_violations("oauth_token_valid") == []


def test_substitute_grafana_variables() -> None:
    expr = 'rate(m{job=~"$job",p=~"${provider:regex}",i=~"[[instance]]"}[$__rate_interval])'
    assert substitute_grafana_variables(expr) == 'rate(m{job=~".*",p=~".*",i=~".*"}[5m])'


def test_unbalanced_expression_is_an_error() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        metric_names("sum(rate(x[5m])")
