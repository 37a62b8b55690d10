"""The Grafana dashboard (rendered from mixin/) and its provisioning example, checked
statically, plus the PromQL of its key panels evaluated by promtool on series that
show what they must show.

Every query must parse (promtool reads them as recording rules), read only the
exporter's metrics (tests/promql.py's list of SPEC's metric table; the live
exporter is compared with that list in tests/live/test_live_contract.py),
carry the mixin's selector and the job/instance/provider/probe variables, and
use counters only inside rate()/increase() or the mixin's lazy-increase idiom.
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
SCHEMA_VERSION = 41  # Grafana 12; its v41 migration only drops timepicker.time_options
# Grafana unit ids the panels may use; a typo would silently show raw numbers.
UNITS = {"none", "short", "s", "d", "percentunit"}
SELECTOR = ("job", "=", '"token-health-exporter"')
# Metrics without a provider label, and metrics with a probe label.
EXPORTER_LEVEL = {
    "up",
    "oauth_exporter_build_info",
    "oauth_exporter_config_last_reload_successful",
    "oauth_exporter_renewal_stalls_total",
}
# Ranges a query may use: Grafana's intervals and the alert windows, so that a
# ratio panel shows what its alert sees.
RANGES = {"$__rate_interval", "$__range", "1h", "6h"}
REQUIRED_PANELS = {
    "Credential status",
    "Providers without a valid token",
    "Failing token renewals",
    "Failing probes",
    "Token time left",
    "Token renewal success ratio (6h)",
    "Token request failures by class",
    "Token requests per minute by token host",
    "Rate-limit headroom by token host",
    "Probe success ratio (1h)",
    "Probe failures by class",
    "Client secrets by days left",
    "Client certificates by days left",
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


def panel(title: str) -> dict[str, Any]:
    (found,) = [p for p in PANELS if p["title"] == title]
    return found


# ------------------------------------------------------------------ dashboard


def test_identity() -> None:
    assert DASHBOARD["uid"] == "token-health"
    assert DASHBOARD["title"] == "Token health"
    assert "token-health" in DASHBOARD["tags"] and len(DASHBOARD["tags"]) >= 2
    assert DASHBOARD["schemaVersion"] == SCHEMA_VERSION
    assert DASHBOARD["editable"] is False, "the dashboard is code: change mixin/, not the UI"
    assert "id" not in DASHBOARD or DASHBOARD["id"] is None, "a provisioned dashboard has no id"
    assert DASHBOARD["links"][0]["url"].endswith("/docs/runbooks.md")


def test_variables_are_chained() -> None:
    names = [var["name"] for var in DASHBOARD["templating"]["list"]]
    assert names == ["datasource", "job", "instance", "provider", "probe"]
    ds = variable("datasource")
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"], "an empty current makes Grafana pick at random"
    previous: list[str] = []
    for name in ("job", "instance", "provider", "probe"):
        var = variable(name)
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        assert var["multi"] is True and var["includeAll"] is True
        assert var["allValue"] == ".*", "All must be a regex, not a list of every value"
        assert var["current"] == {"selected": True, "text": ["All"], "value": ["$__all"]}
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query_text(var))
        assert match, query_text(var)
        assert match.group(2) == name
        assert metric_names(match.group(1)) <= SPEC_METRICS
        (sel,) = selectors(match.group(1))
        assert SELECTOR in sel.matchers
        for earlier in previous:  # each variable is narrowed by the ones before it
            assert (earlier, "=~", f'"${earlier}"') in sel.matchers, (name, earlier)
        previous.append(name)


def test_required_panels_exist() -> None:
    assert set(PANEL_IDS) >= REQUIRED_PANELS, REQUIRED_PANELS - set(PANEL_IDS)


def test_first_row_answers_is_anything_broken() -> None:
    rows = [p for p in DASHBOARD["panels"] if p["type"] == "row"]
    assert rows[0]["title"] == "Is anything broken, and what?" and rows[0]["gridPos"]["y"] == 0
    first_row = [p for p in DASHBOARD["panels"] if p["type"] != "row"
                 and p["gridPos"]["y"] < rows[1]["gridPos"]["y"]]
    assert "Credential status" in {p["title"] for p in first_row}
    table = panel("Credential status")
    assert table["gridPos"]["w"] == 24
    assert table["options"]["sortBy"] == [{"displayName": "Breaks in", "desc": False}]
    organize = next(t for t in table["transformations"] if t["id"] == "organize")
    assert organize["options"]["renameByName"]["Value #A"] == "Breaks in"
    assert {"merge", "organize"} == {t["id"] for t in table["transformations"]}


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
def test_ranges_are_grafana_intervals_or_alert_windows(title: str, expr: str) -> None:
    sels = selectors(expr)
    if re.search(r"\b(rate|irate|increase)\s*\(", expr):
        assert any(s.range for s in sels), "rate()/increase() without a range selector"
    for sel in sels:
        assert sel.range is None or sel.range in RANGES, sel
        assert sel.offset is None or sel.offset in RANGES, sel


@pytest.mark.parametrize(("title", "expr"), TARGETS, ids=TARGET_IDS)
def test_counters_only_inside_rate_or_increase(title: str, expr: str) -> None:
    assert counter_violations(expr) == []


@pytest.mark.parametrize(("title", "expr"), TARGETS, ids=TARGET_IDS)
def test_queries_read_known_metrics_and_honour_variables(title: str, expr: str) -> None:
    sels = selectors(expr)
    assert sels, "the query reads no metric"
    for sel in sels:
        assert sel.name in SPEC_METRICS | PROMETHEUS_SYNTHETIC, sel.name
        assert SELECTOR in sel.matchers, sel
        assert sel.matcher("instance") == ("=~", '"$instance"'), sel
        if sel.name not in EXPORTER_LEVEL:
            assert sel.matcher("provider") == ("=~", '"$provider"'), sel
        if sel.name.startswith("oauth_probe_"):
            assert sel.matcher("probe") == ("=~", '"$probe"'), sel


def test_every_query_parses(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 25
    rules = [
        {"record": f"dashboard:query{i}:expr", "expr": substitute_grafana_variables(expr)}
        for i, expr in enumerate(exprs)
    ]
    # No Grafana variable is left ($1 in label_replace is PromQL's own).
    assert not any(re.search(r"\$[{A-Za-z_]|\[\[", rule["expr"]) for rule in rules), rules
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


# ------------------------------------------ what key panels show, by promtool

LABELS = 'job="token-health-exporter",instance="exporter:10180"'


def evaluate(tmp_path: Path, series: dict[str, str], checks: list[dict[str, Any]]) -> None:
    """promtool test rules with no rules: each check is a promql_expr_test."""
    rules = tmp_path / "empty.rules.yml"
    rules.write_text("groups: []\n")
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "promql_expr_test": checks,
        }],
    }
    path = tmp_path / "panel.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1000))
    done = run_promtool("test", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def panel_expr(title: str, ref: str = "A", **intervals: str) -> str:
    target = next(t for t in panel(title)["targets"] if t["refId"] == ref)
    expr = str(target["expr"])
    for name, value in intervals.items():
        expr = expr.replace(f"${name}", value)
    return substitute_grafana_variables(expr)


def test_status_table_puts_the_most_urgent_credential_first(tmp_path: Path) -> None:
    # a: no valid token; b: renewal failing, token expires in 10 minutes;
    # c: client secret expires in 2 days; d: healthy, nothing known runs out;
    # e: pending at start-up (not broken).
    series = {}
    for p in "abcde":
        series[f'oauth_token_valid{{{LABELS},provider="{p}"}}'] = "0x10" if p in "ae" else "1x10"
        series[f'oauth_token_pending{{{LABELS},provider="{p}"}}'] = "1x10" if p == "e" else "0x10"
        series[f'oauth_token_refresh_consecutive_failures{{{LABELS},provider="{p}"}}'] = (
            "3x10" if p in "ab" else "0x10")
    series[f'oauth_token_expiration_timestamp_seconds{{{LABELS},provider="b"}}'] = "900x10"
    series[f'oauth_token_expiration_timestamp_seconds{{{LABELS},provider="c"}}'] = "7200x10"
    series[f'oauth_client_secret_expiration_timestamp_seconds{{{LABELS},provider="c"}}'] = (
        f"{2 * 86400 + 300}x10")
    series[f'oauth_client_certificate_expiration_timestamp_seconds{{{LABELS},provider="c",use="tls"}}'] = (  # noqa: E501
        f"{20 * 86400}x10")
    series[f'oauth_token_expiration_timestamp_seconds{{{LABELS},provider="d"}}'] = "3600x10"
    never = 3153600000
    expected = [
        ("a", "no valid token", 0),
        ("b", "token (renewal failing)", 600),
        ("c", "client secret", 2 * 86400),
        ("d", "nothing known", never),
        ("e", "nothing known", never),
    ]
    evaluate(tmp_path, series, [{
        "expr": f"sort({panel_expr('Credential status')})",
        "eval_time": "5m",
        "exp_samples": [
            {"labels": f'{{{LABELS},provider="{p}",runs_out="{what}"}}', "value": value}
            for p, what, value in expected
        ],
    }])


def test_success_ratios_are_1_without_failure_series_and_count_the_first_failure(
    tmp_path: Path,
) -> None:
    # Probe "ok" has never failed, so its failure series do not exist; probe
    # "bad" failed once per minute from 30 m on, its series born then with 1.
    ok = f'{LABELS},provider="p",probe="ok"'
    bad = f'{LABELS},provider="p",probe="bad"'
    series = {
        f"oauth_probe_attempts_total{{{ok}}}": "0+1x60",
        f"oauth_probe_attempts_total{{{bad}}}": "0+1x60",
        f'oauth_probe_failures_total{{{bad},error="timeout"}}': "_x30 1+1x30",
    }
    ratio = panel_expr("Probe success ratio (1h)")
    evaluate(tmp_path, series, [
        {"expr": ratio, "eval_time": "20m", "exp_samples": [
            {"labels": '{provider="p",probe="ok"}', "value": 1},
            {"labels": '{provider="p",probe="bad"}', "value": 1},
        ]},
        # 31 failures (the first included) in the 60 runs of the last hour.
        {"expr": f"round({ratio}, 0.001)", "eval_time": "60m", "exp_samples": [
            {"labels": '{provider="p",probe="ok"}', "value": 1},
            {"labels": '{provider="p",probe="bad"}', "value": round(1 - 31 / 60, 3)},
        ]},
    ])


def test_rate_limit_headroom_uses_the_preset_budget(tmp_path: Path) -> None:
    # Two SimpleDocs credentials on one token host, 3 token requests a minute
    # between them, against the documented 10 a minute: 70 % headroom.
    series = {}
    for p in ("sd1", "sd2"):
        labels = f'{LABELS},provider="{p}"'
        series[f'oauth_provider_info{{{labels},preset="simpledocs",token_host="api.sd.example",auth_method="client_secret_post"}}'] = "1x20"  # noqa: E501
        series[f"oauth_token_refresh_attempts_total{{{labels}}}"] = (
            "0+2x20" if p == "sd1" else "0+1x20")
    evaluate(tmp_path, series, [{
        "expr": f"round({panel_expr('Rate-limit headroom by token host', __rate_interval='5m')},"
                " 0.01)",
        "eval_time": "15m",
        "exp_samples": [{"labels": '{token_host="api.sd.example"}', "value": 0.7}],
    }])


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
        ('bottomk by (p) (1, label_replace(a - time(), "r", "x", "", "") or b)', {"a", "b"}),
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
    # The lazy-increase idiom: an existence check, and a series born in the window.
    lazy = "(increase(a_total[1h]) and a_total offset 1h) or (a_total unless a_total offset 1h)"
    assert counter_violations(lazy) == []
    assert counter_violations("a_total unless b_total offset 1h") == ["a_total"]
    assert counter_violations('a_total{x="1"} unless a_total{x="2"} offset 1h') == ["a_total"]
    assert counter_violations("a_total unless a_total") == ["a_total", "a_total"]


def test_substitute_grafana_variables() -> None:
    expr = 'rate(m{job=~"$job",p=~"${provider:regex}",i=~"[[instance]]"}[$__rate_interval])'
    assert substitute_grafana_variables(expr) == 'rate(m{job=~".*",p=~".*",i=~".*"}[5m])'


def test_unbalanced_expression_is_an_error() -> None:
    with pytest.raises(ValueError, match="unbalanced"):
        metric_names("sum(rate(x[5m])")
