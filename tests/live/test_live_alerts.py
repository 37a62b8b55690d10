"""Alert expressions, live, while every provider is healthy: each is empty,
Prometheus evaluates every rule without error, and no alert ever goes pending
or firing (see the package docstring for the set-up)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.live.stack import ALERT_NAMES, ALERT_RULES, RULE_FOR, Healthy, samples
from tests.promql import RULES_FILE, load_rules

#: A real Prometheus server for the whole package: every test here is slow.
pytestmark = pytest.mark.slow


def test_rules_copy_differs_only_in_for(rules_copy: Path) -> None:
    original, copied = load_rules(), load_rules(rules_copy)
    assert len(copied) == len(original)
    for before, after in zip(original, copied, strict=True):
        assert after.get("for") == (RULE_FOR if "for" in before else None), after
        assert {k: v for k, v in after.items() if k != "for"} == {
            k: v for k, v in before.items() if k != "for"}
    assert all(rule.get("for") for rule in ALERT_RULES), "every alert has a for: to shorten"
    # promtool accepted it in the fixture; the shortening itself must be visible.
    assert f"for: {RULE_FOR}" in rules_copy.read_text()
    assert f"for: {RULE_FOR}" not in RULES_FILE.read_text()


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_alert_expression_is_empty_while_healthy(name: str, healthy: Healthy) -> None:
    answer = healthy.rules[name]
    assert answer["status"] == "success", answer
    assert samples(answer) == [], f"{name} would fire while every provider is healthy"


def test_prometheus_evaluates_every_rule_without_error(healthy: Healthy) -> None:
    rules = [rule for group in healthy.rule_groups for rule in group["rules"]]
    assert sorted(r["name"] for r in rules) == sorted(ALERT_NAMES)
    bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert bad == []
    assert {r["state"] for r in rules} == {"inactive"}


def test_no_alert_while_healthy(healthy: Healthy) -> None:
    assert healthy.observed > 5, "too short an observation to mean anything"
    seen = sorted({(a["labels"]["alertname"], a["labels"].get("provider", ""), a["state"])
                   for a in healthy.alerts_seen})
    assert seen == [], f"alerts while every provider was healthy ({healthy.observed:.0f}s)"
