"""The monitoring mixin (mixin/): the checked-in files are a fresh render, mixtool's lint
rules hold, and every setting of ``_config`` reaches every rule and panel.

mixtool (monitoring-mixins/mixtool, pkg/mixer/lint.go) is a Go tool that is not
packaged here, so its rules are ported: alert names CamelCase and at most 40
characters, at most 20 rules per group, severity critical|warning|info, a
templated description, a static summary with a capital and a final period, and
a title and uid on every dashboard.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mixin import render as mixin_render
from tests.promql import dashboard_targets, iter_panels, selectors, substitute_grafana_variables
from tests.promtool import run_promtool

REPO = Path(__file__).resolve().parent.parent
MIXIN = REPO / "mixin"

# A configuration that differs from the default in everything a user is
# likely to change.
CUSTOM = {
    "tokenHealthSelector": 'job="oauth", namespace="auth"',
    "runbookURLPattern": "https://wiki.example.com/ops/token-health#%s",
    "clusterLabel": "k8s_cluster",
    "showMultiCluster": True,
    "latencyBuckets": True,
    "dashboardUid": "oauth-tokens",
    "dashboardTitle": "OAuth tokens",
    "dashboardTags": ["oauth"],
    "dashboardRefresh": "5m",
    "clientSecretExpiryWarningDays": 45,
    "clientSecretExpiryCriticalDays": 7,
    "noValidTokenFor": "3m",
    "tokenRateLimitsByHost": {"auth.example.com": 30},
    "alertSeverities": {"TokenHealthExporterDown": "critical"},
}
CUSTOM_MATCHERS = {("job", "=", '"oauth"'), ("namespace", "=", '"auth"')}


@pytest.fixture(scope="module")
def default_files() -> dict[Path, str]:
    return mixin_render.render()


@pytest.fixture(scope="module")
def custom() -> dict[str, Any]:
    return mixin_render.evaluate(CUSTOM)


@pytest.fixture(scope="module")
def default() -> dict[str, Any]:
    return mixin_render.evaluate()


def alerts_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in result["alerts"]["groups"] for r in g["rules"] if "alert" in r]


def panel_exprs(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in iter_panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield panel.get("title", ""), target["expr"]


def variable_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            yield var["name"], query[len("label_values(") : query.rindex(",")]


# ------------------------------------------------------------------ freshness


@pytest.mark.slow
def test_checked_in_files_equal_a_fresh_render(default_files: dict[Path, str]) -> None:
    assert set(default_files) == {
        Path("alerts/token-health.rules.yml"),
        Path("dashboards/token-health.json"),
        Path("deploy/kubernetes/prometheusrule.yaml"),
        Path("deploy/kubernetes/dashboard-configmap.yaml"),
        Path("deploy/helm/token-health-exporter/files/token-health.rules.yml"),
        Path("deploy/helm/token-health-exporter/files/token-health.json"),
    }
    stale = [str(p) for p, text in default_files.items() if (REPO / p).read_text() != text]
    assert stale == [], "run `python mixin/render.py` and commit the result"


def test_helm_files_are_copies(default_files: dict[Path, str]) -> None:
    helm = Path("deploy/helm/token-health-exporter/files")
    assert default_files[helm / "token-health.rules.yml"] == default_files[
        Path("alerts/token-health.rules.yml")]
    assert default_files[helm / "token-health.json"] == default_files[
        Path("dashboards/token-health.json")]


@pytest.mark.slow
def test_check_mode_passes_and_catches_a_stale_file(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(MIXIN / "render.py"), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    # The same check against a copy of the repository with one edited file.
    copy = tmp_path / "repo"
    shutil.copytree(MIXIN, copy / "mixin")
    for path in mixin_render.render():
        (copy / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, copy / path)
    edited = copy / "alerts" / "token-health.rules.yml"
    edited.write_text(edited.read_text().replace("for: 10m", "for: 11m", 1))
    done = subprocess.run([sys.executable, str(copy / "mixin" / "render.py"), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "alerts/token-health.rules.yml is out of date; run python mixin/render.py")


def test_missing_jsonnet_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "_jsonnet", None)  # makes the import fail
    assert mixin_render.main(["--check"]) == 2
    assert "pip install -e '.[mixin]'" in capsys.readouterr().err


@pytest.mark.slow
def test_jsonnet_entry_points_render_the_same(default_files: dict[Path, str]) -> None:
    import _jsonnet

    rules = yaml.safe_load(_jsonnet.evaluate_file(str(MIXIN / "lib" / "alerts.jsonnet")))
    assert rules == yaml.safe_load(default_files[Path("alerts/token-health.rules.yml")])
    dashboards = json.loads(_jsonnet.evaluate_file(str(MIXIN / "lib" / "dashboards.jsonnet")))
    assert dashboards == {
        "token-health.json": json.loads(default_files[Path("dashboards/token-health.json")])}


def test_generated_files_say_so(default_files: dict[Path, str]) -> None:
    for path, text in default_files.items():
        if path.suffix in (".yml", ".yaml"):
            assert text.startswith("# GENERATED by mixin/render.py"), path


# ------------------------------------------------------------- mixtool lint


def lint(result: dict[str, Any]) -> list[str]:
    """mixtool's lint rules for alerts and dashboards; an empty list means clean."""
    problems = []
    for group in result["alerts"]["groups"]:
        if len(group["rules"]) > 20:
            problems.append(f"group {group['name']} has {len(group['rules'])} rules (max 20)")
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            name = rule["alert"]
            if not (name[:1].isupper() and name.isalnum() and len(name) <= 40):
                problems.append(f"{name}: not CamelCase or longer than 40 characters")
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                problems.append(f"{name}: severity must be critical, warning or info")
            annotations = rule.get("annotations", {})
            description = annotations.get("description", "")
            if "{{" not in description or "$" not in description:
                problems.append(f"{name}: description is not templated")
            summary = annotations.get("summary", "")
            if not summary or "{{" in summary:
                problems.append(f"{name}: summary must be static")
            elif not (summary[0].isupper() and summary.endswith(".")):
                problems.append(f"{name}: summary must start with a capital and end with a period")
    for file_name, dashboard in result["dashboards"].items():
        if not dashboard.get("title") or not dashboard.get("uid"):
            problems.append(f"{file_name}: a dashboard needs a title and a uid")
        for panel in iter_panels(dashboard["panels"]):
            if panel.get("type") != "row" and panel.get("datasource", {}).get("uid") != (
                    "${datasource}"):
                problems.append(f"{file_name}: panel {panel.get('title')} ignores $datasource")
    return problems


@pytest.mark.slow
def test_default_mixin_is_lint_clean(default: dict[str, Any]) -> None:
    assert lint(default) == []


@pytest.mark.slow
def test_custom_mixin_is_lint_clean(custom: dict[str, Any]) -> None:
    assert lint(custom) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda r: r.update(alert="tokenHealthLowercase"), "not CamelCase"),
        (lambda r: r.update(alert="TokenHealth" + "Very" * 8), "longer than 40"),
        (lambda r: r["labels"].update(severity="page"), "severity must be"),
        (lambda r: r["annotations"].update(description="No template."), "not templated"),
        (lambda r: r["annotations"].update(summary="{{ $labels.x }} is bad."), "static"),
        (lambda r: r["annotations"].update(summary="lower case."), "capital"),
        (lambda r: r["annotations"].update(summary="No period"), "period"),
    ],
)
def test_lint_catches(change: Any, problem: str, default: dict[str, Any]) -> None:
    result = copy.deepcopy(default)
    change(result["alerts"]["groups"][0]["rules"][0])
    problems = lint(result)
    assert len(problems) == 1 and problem in problems[0], problems


def test_lint_catches_a_big_group_and_a_dashboard_without_uid(default: dict[str, Any]) -> None:
    result = copy.deepcopy(default)
    group = result["alerts"]["groups"][0]
    group["rules"] = group["rules"] * 5
    del result["dashboards"]["token-health.json"]["uid"]
    problems = lint(result)
    assert any("max 20" in p for p in problems) and any("uid" in p for p in problems)


# ------------------------------------------------------- a non-default config


def test_custom_selector_reaches_every_rule_selector(custom: dict[str, Any]) -> None:
    checked = 0
    for rule in alerts_of(custom):
        sels = selectors(rule["expr"])
        assert sels, rule["alert"]
        for sel in sels:
            assert set(sel.matchers) >= CUSTOM_MATCHERS, (rule["alert"], sel)
            assert ("job", "=", '"token-health-exporter"') not in sel.matchers
            checked += 1
        # Description templates query series too; they carry the alert's labels.
        assert "token-health-exporter" not in json.dumps(rule)
    assert checked > 100


def test_custom_selector_reaches_every_panel_and_variable(custom: dict[str, Any]) -> None:
    dashboard = custom["dashboards"]["token-health.json"]
    queries = list(panel_exprs(dashboard)) + list(variable_queries(dashboard))
    assert len(queries) > 30
    for where, expr in queries:
        for sel in selectors(expr):
            assert set(sel.matchers) >= CUSTOM_MATCHERS, (where, sel)
    # The cluster variable narrows every panel query.
    for where, expr in panel_exprs(dashboard):
        for sel in selectors(expr):
            assert ("k8s_cluster", "=~", '"$cluster"') in sel.matchers, (where, sel)


def test_custom_runbook_pattern_and_dashboard_identity(custom: dict[str, Any]) -> None:
    for rule in alerts_of(custom):
        assert rule["annotations"]["runbook_url"] == (
            f"https://wiki.example.com/ops/token-health#{rule['alert'].lower()}")
    dashboard = custom["dashboards"]["token-health.json"]
    assert (dashboard["uid"], dashboard["title"], dashboard["tags"], dashboard["refresh"]) == (
        "oauth-tokens", "OAuth tokens", ["oauth"], "5m")
    assert dashboard["links"][0]["url"] == "https://wiki.example.com/ops/token-health"
    assert [v["name"] for v in dashboard["templating"]["list"]][:2] == ["datasource", "cluster"]


def test_custom_thresholds_reach_expressions_and_text(custom: dict[str, Any]) -> None:
    by_name = {r["alert"]: r for r in alerts_of(custom)}
    soon = by_name["TokenHealthClientSecretExpiresSoon"]
    assert f"< {45 * 86400}" in soon["expr"] and f">= {7 * 86400}" in soon["expr"]
    assert soon["annotations"]["summary"] == "A client secret expires in less than 45 days."
    very_soon = by_name["TokenHealthClientSecretExpiresVerySoon"]
    assert very_soon["annotations"]["summary"] == (
        "A client secret expires in less than 7 days or has expired.")
    no_token = by_name["TokenHealthNoValidToken"]
    assert no_token["for"] == "3m" and "for 3 minutes" in no_token["annotations"]["description"]
    assert by_name["TokenHealthExporterDown"]["labels"]["severity"] == "critical"
    # The other severities were merged, not replaced.
    assert by_name["TokenHealthProbeFlapping"]["labels"]["severity"] == "warning"
    assert "on (k8s_cluster, job, instance, provider)" in by_name["TokenHealthProbeFailing"]["expr"]


def test_custom_dashboard_options(custom: dict[str, Any]) -> None:
    dashboard = custom["dashboards"]["token-health.json"]
    exprs = [e for _, e in panel_exprs(dashboard)]
    assert any("oauth_probe_duration_seconds_bucket" in e for e in exprs), "latencyBuckets"
    assert any('token_host="auth.example.com"' in e and "* 30" in e for e in exprs)


def promtool_accepts(result: dict[str, Any], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(result["alerts"]))
    done = run_promtool("check", "rules", "--lint=all", "--lint-fatal", str(rules))
    assert done.returncode == 0, done.stdout + done.stderr
    exprs = [{"record": f"panel:q{i}", "expr": substitute_grafana_variables(e)}
             for i, (_, e) in enumerate(panel_exprs(result["dashboards"]["token-health.json"]))]
    panels = tmp_path / "panels.yml"
    panels.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": exprs}]}))
    done = run_promtool("check", "rules", str(panels))
    assert done.returncode == 0, done.stdout + done.stderr


def test_custom_render_is_valid_promql(custom: dict[str, Any], tmp_path: Path) -> None:
    promtool_accepts(custom, tmp_path)


@pytest.mark.slow
def test_an_empty_selector_renders_valid_promql(tmp_path: Path) -> None:
    result = mixin_render.evaluate({"tokenHealthSelector": ""})
    promtool_accepts(result, tmp_path)
    assert "{, " not in json.dumps(result)


@pytest.mark.slow
def test_hierarchy_can_be_left_to_alertmanager(tmp_path: Path) -> None:
    result = mixin_render.evaluate({"hierarchyInRules": False})
    promtool_accepts(result, tmp_path)
    # Flapping reads oauth_token_valid as part of its own definition (a window
    # that held a token outage is not flapping), not as a hierarchy clause.
    for rule in alerts_of(result):
        assert "oauth_token_valid" not in rule["expr"] or rule["alert"] in (
            "TokenHealthNoValidToken", "TokenHealthProbeFlapping"), rule["alert"]


def test_default_dashboard_reads_what_the_default_rules_do() -> None:
    # Both sides of the mixin use the default selector by default.
    for _, expr in dashboard_targets():
        for sel in selectors(expr):
            assert ("job", "=", '"token-health-exporter"') in sel.matchers, sel
