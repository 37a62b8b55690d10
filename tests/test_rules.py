"""The alert rules: promtool accepts and tests them; every alert follows the conventions;
every situation of docs/alerts.md raises exactly the alerts its table says.

Conventions (monitoring mixins): CamelCase names with the one prefix
``TokenHealth``; ``severity`` critical (a page), warning (this week) or info (a
ticket); a ``layer`` for the root-cause hierarchy; a static ``summary``, a
templated ``description`` and a ``runbook_url`` whose anchor is a section of
docs/runbooks.md; a firing and a silent ``promtool test rules`` case per alert.
The mixin's own lint rules (mixtool's) are in tests/test_mixin.py.
"""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
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
SITUATIONS_FILE = RULE_TEST_DIR / "situations.test.yml"
ALERTS_DOC = REPO / "docs" / "alerts.md"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RUNBOOK_BASE = (
    "https://github.com/token-health-exporter/token-health-exporter/blob/main/docs/runbooks.md"
)
SELECTOR = ("job", "=", '"token-health-exporter"')  # the mixin's default tokenHealthSelector
NAME = re.compile(r"^TokenHealth(?:[A-Z][a-z0-9]+)+$")
ANNOTATIONS = {"summary", "description", "runbook_url"}
SEVERITIES = {"critical", "warning", "info"}
LAYERS = ("token", "token_endpoint", "probe", "expiry")  # highest first
EXPORTER_LAYER = "exporter"
# The expression every situation test lists its firing alerts with.
FIRING = 'count by (alertname, severity, layer, provider) (ALERTS{alertstate="firing"})'
DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")

ALERTS: list[dict[str, Any]] = [rule for rule in load_rules() if "alert" in rule]
ALERT_IDS = [rule["alert"] for rule in ALERTS]
BY_NAME = {rule["alert"]: rule for rule in ALERTS}


def seconds(duration: str) -> int:
    match = DURATION.match(duration)
    assert match and any(match.groups()), f"unsupported duration {duration!r}"
    h, m, s = (int(part or 0) for part in match.groups())
    return h * 3600 + m * 60 + s


def rule_test_files() -> list[Path]:
    files = sorted(RULE_TEST_DIR.glob("*.yml"))
    assert files, f"no promtool test files in {RULE_TEST_DIR}"
    return files


@functools.cache
def alert_cases() -> dict[str, list[list[dict[str, Any]]]]:
    """alertname -> the exp_alerts of every alert_rule_test that names it."""
    cases: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for path in rule_test_files():
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                cases[case["alertname"]].append(case.get("exp_alerts") or [])
    return cases


# ---------------------------------------------------------------- situations


@dataclass(frozen=True)
class Firing:
    """One check of a situation test: the alerts firing at ``eval_time``."""

    eval_time: str
    alerts: frozenset[tuple[str, str, str, str]]  # (alertname, severity, layer, provider)


@dataclass(frozen=True)
class Situation:
    name: str
    test: dict[str, Any]
    checks: tuple[Firing, ...]

    @property
    def final(self) -> Firing:
        """The last check: the situation once every `for:` has passed."""
        return self.checks[-1]


def parse_labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', text))


def load_situations(path: Path = SITUATIONS_FILE) -> list[Situation]:
    found = []
    for test in yaml.safe_load(path.read_text())["tests"]:
        checks = []
        for case in test.get("promql_expr_test", []):
            if case["expr"] != FIRING:
                continue
            alerts = set()
            for sample in case.get("exp_samples") or []:
                labels = parse_labels(sample["labels"])
                assert sample["value"] == 1, sample
                alerts.add(
                    (labels["alertname"], labels["severity"], labels["layer"],
                     labels.get("provider", ""))
                )
            checks.append(Firing(case["eval_time"], frozenset(alerts)))
        assert checks, f"situation {test['name']!r} lists no firing alerts"
        found.append(Situation(test["name"], test, tuple(checks)))
    return found


SITUATIONS = load_situations()
SITUATION_IDS = [s.name for s in SITUATIONS]


@dataclass(frozen=True)
class Row:
    situation: str
    classes: str
    alerts: tuple[str, ...]
    severities: tuple[str, ...]
    after: tuple[str, ...]
    action: str


def table_rows() -> list[Row]:
    """The rows of the situation table in docs/alerts.md."""
    text = ALERTS_DOC.read_text()
    header = "| Situation | Error classes | Alerts | Severity | After | Runbook action |"
    assert header in text, "docs/alerts.md lost its situation table"
    lines = text.split(header, 1)[1].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 6, line
        situation, classes, alerts, severity, after, action = cells
        if alerts == "none":
            names: tuple[str, ...] = ()
            assert severity == after == "\N{EN DASH}", line
            severities: tuple[str, ...] = ()
            afters: tuple[str, ...] = ()
        else:
            names = tuple(re.fullmatch(r"`(\w+)`", a.strip()).group(1)  # type: ignore[union-attr]
                          for a in alerts.split(" + "))
            severities = tuple(s.strip() for s in severity.split(" + "))
            afters = tuple(a.strip() for a in after.split(" + "))
        rows.append(Row(situation, classes, names, severities, afters, action))
    return rows


# ------------------------------------------------------------------ promtool


@pytest.mark.slow
def test_promtool_rule_tests_pass() -> None:
    files = rule_test_files()
    done = run_promtool("test", "rules", *(str(f) for f in files), cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(files), done.stdout


def test_promtool_lint_is_clean() -> None:
    done = run_promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(load_rules())} rules found" in done.stdout, done.stdout


@pytest.mark.slow
def test_rule_tests_would_catch_a_wrong_annotation(tmp_path: Path) -> None:
    # The firing cases pin annotations exactly: a changed expectation must fail.
    doc = yaml.safe_load((RULE_TEST_DIR / "token-health.test.yml").read_text())
    doc["rule_files"] = [str(RULES_FILE)]
    changed = 0
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                alert["exp_annotations"]["description"] += " (changed)"
                changed += 1
    assert changed >= len(ALERTS)
    mutated = tmp_path / "mutated.test.yml"
    mutated.write_text(yaml.safe_dump(doc))
    done = run_promtool("test", "rules", str(mutated))
    assert done.returncode != 0, done.stdout
    assert (done.stdout + done.stderr).count("(changed)") >= changed


@pytest.mark.slow
def test_situation_tests_would_catch_an_extra_alert(tmp_path: Path) -> None:
    # "None elsewhere" holds only if the firing list is exhaustive: drop one
    # expected alert from a situation and promtool must fail.
    doc = yaml.safe_load(SITUATIONS_FILE.read_text())
    doc["rule_files"] = [str(RULES_FILE)]
    test = next(t for t in doc["tests"] if t["name"] == "whole provider down, long runway")
    case = [c for c in test["promql_expr_test"] if c["expr"] == FIRING][-1]
    assert len(case["exp_samples"]) == 2
    case["exp_samples"] = case["exp_samples"][:1]
    doc["tests"] = [test]
    mutated = tmp_path / "mutated.test.yml"
    mutated.write_text(yaml.safe_dump(doc))
    done = run_promtool("test", "rules", str(mutated))
    assert done.returncode != 0, done.stdout
    assert "TokenHealthRenewalFailing" in done.stdout + done.stderr


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
    assert len(ALERTS) >= 20
    assert len(set(ALERT_IDS)) == len(ALERT_IDS), ALERT_IDS


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_name_is_camelcase_with_prefix(rule: dict[str, Any]) -> None:
    assert NAME.match(rule["alert"]), rule["alert"]


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_severity_layer_and_for(rule: dict[str, Any]) -> None:
    assert set(rule["labels"]) == {"severity", "layer"}, rule["labels"]
    severity = rule["labels"]["severity"]
    assert severity in SEVERITIES
    assert rule["labels"]["layer"] in (*LAYERS, EXPORTER_LAYER)
    assert "for" in rule, "every alert waits a while before it fires"
    wait = seconds(rule["for"])
    # A page must come soon enough to act before a 1 h token runs out (about
    # 20 minutes are left at a scheduled renewal); the start-up grace is the
    # one exception, by design (docs/alerts.md).
    limit = 15 * 60 if severity == "critical" else 60 * 60
    if rule["alert"] == "TokenHealthFirstTokenOverdue":
        limit = 60 * 60
    assert 60 <= wait <= limit, f"{severity} alert waits {rule['for']}"


def test_every_layer_but_the_exporter_has_a_critical_alert() -> None:
    critical_layers = {
        r["labels"]["layer"] for r in ALERTS if r["labels"]["severity"] == "critical"}
    assert critical_layers == set(LAYERS)


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_annotations(rule: dict[str, Any]) -> None:
    annotations = rule["annotations"]
    assert set(annotations) == ANNOTATIONS
    assert annotations["summary"].strip().endswith(".")
    assert "{{" not in annotations["summary"], "summary is static; details go in description"
    assert "{{" in annotations["description"], "description names the alert's labels"
    assert "\n" not in annotations["description"], "one paragraph"


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_runbook_url_points_at_a_runbook_section(rule: dict[str, Any]) -> None:
    anchor = rule["alert"].lower()
    assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#{anchor}"
    anchors = {github_anchor(heading) for heading in runbook_sections()}
    assert anchor in anchors, f"docs/runbooks.md has no heading with anchor #{anchor}"


def test_runbook_base_is_the_projects_source_url() -> None:
    # When pyproject names the repository, the runbooks must live there.
    text = (REPO / "pyproject.toml").read_text()
    source = re.search(r'^Source\s*=\s*"([^"]+)"', text, re.M)
    if source is not None:
        assert RUNBOOK_BASE.startswith(source.group(1).rstrip("/") + "/blob/"), source.group(1)
    assert RUNBOOK_BASE.endswith("/docs/runbooks.md")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@functools.cache
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


@pytest.mark.slow
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
            assert alert["exp_labels"]["layer"] == rule["labels"]["layer"]
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
    if rule["labels"]["layer"] != EXPORTER_LAYER:
        assert "provider" in labels, "a credential's alert must carry the provider label"
    for label in ("provider", "error", "probe", "scope", "use"):
        if label in labels:
            assert f"$labels.{label}" in description, f"description does not name {label}"
    if rule["labels"]["layer"] == EXPORTER_LAYER:
        assert "$labels.instance" in description or "$labels.job" in description


# ----------------------------------------------------------- the situations


def test_situation_names_are_unique() -> None:
    assert len(set(SITUATION_IDS)) == len(SITUATION_IDS)


def test_the_table_and_the_situation_tests_agree() -> None:
    rows = table_rows()
    assert [r.situation for r in rows] == SITUATION_IDS, "same situations, same order"
    for row, situation in zip(rows, SITUATIONS, strict=True):
        fired = situation.final.alerts
        assert sorted(row.alerts) == sorted(a[0] for a in fired), row.situation
        assert len(row.severities) == len(row.alerts) == len(row.after), row
        for name, severity, after in zip(row.alerts, row.severities, row.after, strict=True):
            rule = BY_NAME[name]
            assert severity == rule["labels"]["severity"], (row.situation, name)
            assert after == rule["for"], (row.situation, name)
        assert row.action and row.classes, row


def test_every_alert_is_raised_by_some_situation() -> None:
    raised = {a[0] for s in SITUATIONS for a in s.final.alerts}
    assert raised == set(ALERT_IDS)


@pytest.mark.parametrize("situation", SITUATIONS, ids=SITUATION_IDS)
def test_one_critical_alert_per_credential(situation: Situation) -> None:
    # The point of the hierarchy: whatever happens to a credential, at most
    # one page at any checked time.
    for check in situation.checks:
        pages = Counter(a[3] for a in check.alerts if a[1] == "critical")
        assert all(n == 1 for n in pages.values()), (check.eval_time, pages)


@pytest.mark.parametrize("situation", SITUATIONS, ids=SITUATION_IDS)
def test_firing_labels_match_the_rules(situation: Situation) -> None:
    for check in situation.checks:
        for name, severity, layer, _ in check.alerts:
            assert (severity, layer) == (
                BY_NAME[name]["labels"]["severity"], BY_NAME[name]["labels"]["layer"])


def test_a_healthy_situation_and_a_silent_check_before_each_for() -> None:
    healthy = next(s for s in SITUATIONS if s.name == "healthy")
    assert all(not c.alerts for c in healthy.checks)
    # Most situations also check a moment before the alert's for: elapsed.
    early = [s for s in SITUATIONS if len(s.checks) > 1 and not s.checks[0].alerts]
    assert len(early) >= 10


def series_values(situation: Situation, name: str) -> dict[str, list[float | None]]:
    """series text -> its expanded values (None for missing or stale samples)."""
    found = {}
    for entry in situation.test["input_series"]:
        if entry["series"].split("{")[0] == name:
            found[entry["series"]] = expand(entry["values"])
    return found


def expand(values: str) -> list[float | None]:
    """promtool's expanding notation: `a+bxn`, `axn`, `_`, `_xn`, `stale`."""
    out: list[float | None] = []
    for item in values.split():
        if item in ("_", "stale"):
            out.append(None)
            continue
        missing = re.fullmatch(r"_x(\d+)", item)
        if missing:
            out.extend([None] * int(missing.group(1)))
            continue
        match = re.fullmatch(r"(-?[\d.e+]+?)(?:([+-][\d.]+))?x(\d+)", item)
        if match:
            start, step, n = float(match.group(1)), float(match.group(2) or 0), int(match.group(3))
            out.extend(start + step * i for i in range(n + 1))
        else:
            out.append(float(item))
    return out


def test_expand() -> None:
    assert expand("1 0x2 _ 1+1x2 _x2 stale 5-1x1") == [1, 0, 0, 0, None, 1, 2, 3, None, None,
                                                          None, 5, 4]


def test_start_up_with_50_pending_credentials_raises_nothing() -> None:
    situation = next(s for s in SITUATIONS if s.name.startswith("start-up with 50 credentials"))
    pending = series_values(situation, "oauth_token_pending")
    valid = series_values(situation, "oauth_token_valid")
    assert len(pending) == len(valid) == 50
    # Served at the pace of SimpleDocs' limit: at most 10 credentials a minute
    # leave the pending state, the last after 5 minutes.
    served_at = [values.index(0) for values in pending.values()]
    assert max(Counter(served_at).values()) <= 10 and max(served_at) == 5
    for series, values in valid.items():
        flip = values.index(1)
        assert pending[series.replace("oauth_token_valid", "oauth_token_pending")].index(0) == flip
    times = [seconds(c.eval_time) for c in situation.checks]
    grace = seconds(BY_NAME["TokenHealthFirstTokenOverdue"]["for"])
    assert min(times) <= 120 and max(times) > grace, "checked during start-up and after the grace"
    assert all(not c.alerts for c in situation.checks)


def test_a_30_percent_flapping_probe_raises_exactly_one_alert() -> None:
    situation = next(s for s in SITUATIONS if s.name == "probe fails 30 % of runs")
    (failures,) = series_values(situation, "oauth_probe_failures_total").values()
    (attempts,) = series_values(situation, "oauth_probe_attempts_total").values()
    assert failures[0] is None, "the class's series appears with the first failure"
    window = 60
    failed = failures[-1] - failures[-1 - window]  # type: ignore[operator]
    sent = attempts[-1] - attempts[-1 - window]  # type: ignore[operator]
    assert failed / sent == pytest.approx(0.3)
    assert situation.final.alerts == {("TokenHealthProbeFlapping", "warning", "probe", "p")}


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        ("token revoked once", "oauth_probe_failures_total"),
        ("probe failing", "oauth_probe_last_error"),
        ("token endpoint failing, long runway", "oauth_token_refresh_last_error"),
    ],
)
def test_the_first_failure_of_a_class_alerts(name: str, metric: str) -> None:
    # The class's series does not exist before the failure (as the exporter
    # exports it), and the alert still fires.
    situation = next(s for s in SITUATIONS if s.name == name)
    for values in series_values(situation, metric).values():
        first = next(i for i, v in enumerate(values) if v is not None)
        assert first > 0 and values[first] == 1
    assert situation.final.alerts


def test_secret_expiry_thresholds() -> None:
    warning = BY_NAME["TokenHealthClientSecretExpiresSoon"]["expr"]
    critical = BY_NAME["TokenHealthClientSecretExpiresVerySoon"]["expr"]
    assert f"< {30 * 86400}" in warning and f">= {3 * 86400}" in warning
    assert f"< {3 * 86400}" in critical


# --------------------------------------------------------------------- PromQL


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_counters_only_inside_rate_or_increase(rule: dict[str, Any]) -> None:
    assert counter_violations(rule["expr"]) == []


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_rules_read_only_the_exporters_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, "the expression reads no metric"
    assert names <= SPEC_METRICS | PROMETHEUS_SYNTHETIC, names - SPEC_METRICS


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_every_selector_carries_the_mixin_selector(rule: dict[str, Any]) -> None:
    for sel in selectors(rule["expr"]):
        assert SELECTOR in sel.matchers, sel


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


HOLD = "\n)\nunless on (cluster, job, instance, provider)\n(\n"
# What each layer's hierarchy clause must mention: the critical conditions above.
HELD_BY = {
    "token_endpoint": ("oauth_token_valid",),
    "probe": ("oauth_token_valid", "oauth_token_refresh_last_error"),
    "expiry": ("oauth_token_valid", "oauth_token_refresh_last_error",
               "oauth_probe_last_error", "oauth_probe_consecutive_failures"),
}


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_IDS)
def test_lower_layers_are_held_back_by_the_layers_above(rule: dict[str, Any]) -> None:
    layer = rule["labels"]["layer"]
    if layer not in HELD_BY:
        assert HOLD not in rule["expr"]
        return
    assert rule["expr"].count(HOLD) == 1, "one hierarchy clause, at the top level"
    clause = rule["expr"].split(HOLD)[1]
    for metric in HELD_BY[layer]:
        assert metric in clause, (layer, metric)


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
