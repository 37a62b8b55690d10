"""The alert rules: promtool accepts and tests them; every alert follows the conventions.

Conventions (monitoring mixins): CamelCase names with the one prefix
``TokenHealth``; ``severity`` critical (pages) or warning (ticket); a static
``summary``, a templated ``description`` and a ``runbook_url`` whose anchor is
a section of docs/runbooks.md; a firing and a silent ``promtool test rules``
case for every alert.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import (
    PROMETHEUS_SYNTHETIC,
    RULES_FILE,
    SPEC_METRICS,
    counter_violations,
    load_rules,
    metric_names,
    selectors,
)
from tests.promtool import INSTALL_HINT, promtool_path, run_promtool

REPO = Path(__file__).resolve().parent.parent
RULE_TEST_DIR = REPO / "alerts" / "tests"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = (
    "https://github.com/token-health-exporter/token-health-exporter/blob/main/docs/runbooks.md"
)
NAME = re.compile(r"^TokenHealth(?:[A-Z][a-z0-9]+)+$")
ANNOTATIONS = {"summary", "description", "runbook_url"}
# Alerts about the exporter process itself, which have no provider label.
EXPORTER_LEVEL = {
    "TokenHealthExporterDown",
    "TokenHealthExporterAbsent",
    "TokenHealthConfigReloadFailed",
}
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

ALERTS: list[dict[str, Any]] = [rule for rule in load_rules() if "alert" in rule]
ALERT_IDS = [rule["alert"] for rule in ALERTS]


def seconds(duration: str) -> int:
    match = DURATION.match(duration)
    assert match and any(match.groups()), f"unsupported duration {duration!r}"
    h, m, s = (int(part or 0) for part in match.groups())
    return h * 3600 + m * 60 + s


def rule_test_files() -> list[Path]:
    files = sorted(RULE_TEST_DIR.glob("*.yml"))
    assert files, f"no promtool test files in {RULE_TEST_DIR}"
    return files


def alert_cases() -> dict[str, list[list[dict[str, Any]]]]:
    """alertname -> the exp_alerts of every alert_rule_test that names it."""
    cases: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for path in rule_test_files():
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases[case["alertname"]].append(case.get("exp_alerts") or [])
    return cases


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """Level-2 heading -> its body, ignoring lines inside code fences."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    fenced = False
    for line in RUNBOOKS.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), [])
            continue
        if current is not None:
            current.append(line)
    return {heading: "\n".join(body) for heading, body in sections.items()}


# ------------------------------------------------------------------ promtool


def test_promtool_rule_tests_pass() -> None:
    files = rule_test_files()
    done = run_promtool("test", "rules", *(str(f) for f in files), cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files), done.stdout


def test_promtool_lint_is_clean() -> None:
    done = run_promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in done.stdout, done.stdout


def test_rule_tests_would_catch_a_wrong_annotation(tmp_path: Path) -> None:
    # The firing cases pin annotations exactly: a changed expectation must fail.
    original = (RULE_TEST_DIR / "token-health.test.yml").read_text()
    doc = yaml.safe_load(original)
    doc["rule_files"] = [str(RULES_FILE)]
    changed = 0
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                alert["exp_annotations"]["description"] += " (changed)"
                changed += 1
    assert changed
    mutated = tmp_path / "mutated.test.yml"
    mutated.write_text(yaml.safe_dump(doc))
    done = run_promtool("test", "rules", str(mutated))
    assert done.returncode != 0, done.stdout
    output = done.stdout + done.stderr
    assert output.count("(changed)") >= changed, output


def test_missing_promtool_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMTOOL", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(AssertionError, match=r"apt-get install prometheus"):
        promtool_path()
    assert "apt-get install prometheus" in INSTALL_HINT


def test_promtool_env_override_must_be_executable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROMTOOL", str(tmp_path / "nope"))
    with pytest.raises(AssertionError, match="is not an executable file"):
        promtool_path()


# ---------------------------------------------------------------- conventions


def test_there_are_alerts_and_names_are_unique() -> None:
    assert len(ALERTS) >= 12
    assert len(set(ALERT_IDS)) == len(ALERT_IDS), ALERT_IDS


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_name_is_camelcase_with_prefix(rule: dict[str, Any]) -> None:
    assert NAME.match(rule["alert"]), rule["alert"]


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_severity_and_for(rule: dict[str, Any]) -> None:
    assert set(rule["labels"]) == {"severity"}, rule["labels"]
    severity = rule["labels"]["severity"]
    assert severity in {"critical", "warning"}
    assert "for" in rule, "every alert waits a while before it fires"
    wait = seconds(rule["for"])
    # Paging alerts must page soon enough to act before a token runs out
    # (1 h tokens leave about 20 minutes at a scheduled renewal).
    limit = 15 * 60 if severity == "critical" else 60 * 60
    assert 60 <= wait <= limit, f"{severity} alert waits {rule['for']}"


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_annotations(rule: dict[str, Any]) -> None:
    annotations = rule["annotations"]
    assert set(annotations) == ANNOTATIONS
    assert annotations["summary"].strip().endswith(".")
    assert "{{" not in annotations["summary"], "summary is static; details go in description"
    assert "{{" in annotations["description"], "description names the alert's labels"


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_runbook_url_points_at_a_runbook_section(rule: dict[str, Any]) -> None:
    anchor = rule["alert"].lower()
    assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#{anchor}"
    anchors = {github_anchor(heading) for heading in runbook_sections()}
    assert anchor in anchors, f"docs/runbooks.md has no heading with anchor #{anchor}"


def test_runbook_sections_are_complete_and_none_is_stale() -> None:
    sections = runbook_sections()
    documented = {h for h in sections if h.startswith("TokenHealth")}
    assert documented == set(ALERT_IDS)
    for name in ALERT_IDS:
        body = sections[name]
        for part in ("**Meaning.**", "**Confirm.**", "**Fix.**"):
            assert part in body, f"runbook {name} lacks {part}"
        assert "```promql" in body, f"runbook {name} shows no query to confirm it"


# ---------------------------------------------------------------- rule tests


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_alert_has_a_firing_and_a_silent_case(rule: dict[str, Any]) -> None:
    cases = alert_cases()[rule["alert"]]
    assert any(cases), f"{rule['alert']} has no firing test case"
    assert any(not exp for exp in cases), f"{rule['alert']} has no silent test case"


def test_rule_tests_name_only_existing_alerts() -> None:
    assert set(alert_cases()) <= set(ALERT_IDS)


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_firing_cases_pin_labels_and_annotations(rule: dict[str, Any]) -> None:
    for exp_alerts in alert_cases()[rule["alert"]]:
        for alert in exp_alerts:
            assert alert["exp_labels"]["severity"] == rule["labels"]["severity"]
            assert set(alert.get("exp_annotations", {})) == ANNOTATIONS, alert


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_description_names_the_alert_labels(rule: dict[str, Any]) -> None:
    labels = {
        label
        for exp_alerts in alert_cases()[rule["alert"]]
        for alert in exp_alerts
        for label in alert["exp_labels"]
    }
    description = rule["annotations"]["description"]
    if rule["alert"] not in EXPORTER_LEVEL:
        assert "provider" in labels, "a provider alert must carry the provider label"
    for label in ("provider", "error", "probe"):
        if label in labels:
            assert f"$labels.{label}" in description, f"description does not name {label}"
    if rule["alert"] in EXPORTER_LEVEL:
        assert "$labels.instance" in description or "$labels.job" in description


# --------------------------------------------------------------------- PromQL


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_counters_only_inside_rate_or_increase(rule: dict[str, Any]) -> None:
    assert counter_violations(rule["expr"]) == []


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_rules_read_only_the_exporters_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, "the expression reads no metric"
    assert names <= SPEC_METRICS | PROMETHEUS_SYNTHETIC, names - SPEC_METRICS


def test_error_matchers_use_known_classes() -> None:
    from exporter.errors import ALL_ERROR_CLASSES

    known = {str(cls) for cls in ALL_ERROR_CLASSES}
    used: set[str] = set()
    for rule in ALERTS:
        for sel in selectors(rule["expr"]):
            matcher = sel.matcher("error")
            if matcher:
                used |= set(matcher[1].strip('"').split("|"))
    assert used, "no rule selects an error class"
    assert used <= known, used - known


def test_one_job_matcher_documented_in_the_header() -> None:
    jobs = {
        sel.matcher("job")
        for rule in ALERTS
        for sel in selectors(rule["expr"])
        if sel.matcher("job") is not None
    }
    assert jobs == {("=", '"token-health-exporter"')}, jobs
    header = RULES_FILE.read_text().split("groups:")[0]
    assert 'job="token-health-exporter"' in header and "sed -i" in header


def runbook_queries() -> list[str]:
    """Every line of every ```promql block in docs/runbooks.md."""
    blocks = re.findall(r"^```promql\n(.*?)^```", RUNBOOKS.read_text(), re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_runbook_queries_parse_and_read_known_metrics(tmp_path: Path) -> None:
    queries = runbook_queries()
    assert len(queries) >= len(ALERTS)
    rules = []
    for i, query in enumerate(queries):
        expr = re.sub(r"<[a-z]+>", "example", query)  # placeholders such as <provider>
        names = metric_names(expr)
        assert names and names <= SPEC_METRICS | PROMETHEUS_SYNTHETIC, query
        rules.append({"record": f"runbook:query{i}:expr", "expr": expr})
    path = tmp_path / "runbook.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "runbook", "rules": rules}]}))
    done = run_promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
