"""Dashboard queries, live, while every provider is healthy: each one evaluates,
and returns the series and values ``DASHBOARD_EXPECTATIONS`` says it must."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import pytest

from tests.live.stack import (
    BY_NAME,
    GRANTED_SCOPES,
    JOB,
    PROBES,
    PROVIDER_NAMES,
    PROVIDERS,
    SECRET_PROVIDERS,
    TARGET_IDS,
    TARGETS,
    Exporter,
    Healthy,
    Prometheus,
    Sample,
    any_values,
    grafana_to_promql,
    live_values,
    samples,
    variable_selectors,
)

# ---------------------------------------------------------------- expectations

#: A real Prometheus server for the whole package: every test here is slow.
pytestmark = pytest.mark.slow


def _in_lifetime(labels: Mapping[str, str], value: float) -> bool:
    return 0 < value <= BY_NAME[labels["provider"]].lifetime


def _finite(labels: Mapping[str, str], value: float) -> bool:
    return math.isfinite(value) and 0 <= value < 5


def _equals(expected: float) -> Callable[[Mapping[str, str], float], bool]:
    def check(labels: Mapping[str, str], value: float) -> bool:
        return value == expected

    check.__name__ = f"== {expected:g}"
    return check


@dataclass(frozen=True)
class Expect:
    """What a dashboard query returns while every provider is healthy.

    ``series``: "empty"; "single" (one sample); "provider" (one per provider);
    "probe" (one per probe); "secret" (one per provider with a secret expiry);
    "scope" (one per requested scope); "hosts" (one per token host, each
    provider's own in this set-up); "budget" (one token host: SimpleDocs', the
    one preset with a documented budget).
    """

    series: Literal["empty", "single", "provider", "probe", "secret", "scope", "hosts", "budget"]
    check: Callable[[Mapping[str, str], float], bool] = lambda labels, value: True
    why: str = ""


NEVER = 3153600000  # the status table's "nothing known runs out" (mixin/dashboards)


def _secret_or_never(labels: Mapping[str, str], value: float) -> bool:
    if labels["provider"] in SECRET_PROVIDERS:
        return labels.get("runs_out") == "client secret" and 300 * 86400 < value <= 366 * 86400
    return labels.get("runs_out") == "nothing known" and value == NEVER


# Every query of the dashboard (by panel title, or title#refId where a panel
# has several), classified on purpose: a new query fails
# test_every_panel_is_classified until it is added here.
DASHBOARD_EXPECTATIONS: dict[str, Expect] = {
    "Providers without a valid token": Expect("single", _equals(0), "`or vector(0)`: never blank"),
    "Pending first token": Expect("single", _equals(0), "every first token request completed"),
    "Failing token renewals": Expect("single", _equals(0), "`or vector(0)`: never blank"),
    "Failing probes": Expect("single", _equals(0), "`or vector(0)`: never blank"),
    "Secrets and certificates expiring within 30 days": Expect(
        "single", _equals(0), "the one secret expires in a year"),
    "Exporters down": Expect("single", _equals(0), "the scrape works"),
    "Credential status#A": Expect("provider", _secret_or_never,
                                  "the secret's year, else nothing known runs out"),
    "Credential status#B": Expect("provider", _equals(1), "valid, not pending"),
    "Credential status#C": Expect("provider", _equals(0), "no token failure in a row"),
    "Credential status#D": Expect("empty", why="no last token error while healthy"),
    "Credential status#E": Expect("provider", _equals(0), "no failing probe, yet a row"),
    "Token time left": Expect("provider", _in_lifetime, "held token, at most one lifetime"),
    "Next renewal in": Expect(
        "provider",
        # A scrape that lands while a renewal is in flight sees the old plan.
        lambda labels, value: -5 < value <= BY_NAME[labels["provider"]].lifetime,
        "a renewal is planned within one lifetime"),
    "Token renewal success ratio (6h)": Expect("provider", _equals(1),
                                               "`or attempts * 0`: 1 without failure series"),
    "Token request failures by class": Expect("empty", why="`> 0` and nothing fails"),
    "Token requests per minute by token host#A": Expect(
        "hosts", lambda labels, value: value > 0, "every simulator renews every few seconds"),
    "Token requests per minute by token host#B": Expect(
        "budget", _equals(10), "SimpleDocs' documented 10 token requests a minute"),
    "Rate-limit headroom by token host": Expect(
        "budget", lambda labels, value: 0 < value < 1, "SimpleDocs renews a 24 s token"),
    "Token request latency": Expect("provider", _finite,
                                    "mean of the renewals within $__rate_interval"),
    "Time since last successful token request": Expect(
        "provider", lambda labels, value: 0 <= value <= BY_NAME[labels["provider"]].lifetime,
        "renewed within one lifetime"),
    "Probe status": Expect("probe", _equals(1), "every probe passes"),
    "Probe success ratio (1h)": Expect("probe", _equals(1),
                                       "`or attempts * 0`: 1 without failure series"),
    "Probe failures by class": Expect("empty", why="`> 0` and nothing fails"),
    "Probe latency": Expect("probe", _finite, "probes run every 1-2 s"),
    "Probe details#A": Expect("probe", _equals(200), "every probe expects 200"),
    "Probe details#B": Expect("probe", _equals(0), "no failure in a row"),
    "Probe details#C": Expect("empty", why="no last probe error while healthy"),
    "Client secrets by days left": Expect("secret", lambda labels, value: 300 < value <= 366,
                                          "one secret, a year left"),
    "Client certificates by days left": Expect("empty", why="no client certificate configured"),
    "Granted scopes": Expect("scope", _equals(1), "every requested scope granted"),
    "Providers": Expect("provider", _equals(1), "info metric"),
    "Last config reload": Expect("single", _equals(1), "the config loaded"),
    "Renewal stalls repaired": Expect("single", _equals(0), "`or vector(0)`: no stall"),
    "Exporter versions": Expect("single", _equals(1), "build info"),
}


# The labels that tell a query's series apart, and the series it must return.
SERIES_LABELS: dict[str, tuple[str, ...]] = {
    "single": (),
    "provider": ("provider",),
    "secret": ("provider",),
    "probe": ("provider", "probe"),
    "scope": ("provider", "scope"),
    "hosts": ("token_host",),
    "budget": ("token_host",),
}
SERIES_WANTED: dict[str, frozenset[tuple[str, ...]]] = {
    "single": frozenset({()}),
    "provider": frozenset((name,) for name in PROVIDER_NAMES),
    "secret": frozenset((name,) for name in SECRET_PROVIDERS),
    "probe": PROBES,
    "scope": GRANTED_SCOPES,
}
# Token hosts are loopback ports chosen at run time: only their number is known.
SERIES_COUNT = {"hosts": len(PROVIDERS), "budget": 1}


def problems_with(expect: Expect, found: list[Sample]) -> list[str]:
    """Why ``found`` does not meet ``expect``; empty if it does."""
    if expect.series == "empty":
        return [f"expected no series, got {[(s.labels, s.value) for s in found]}"] if found else []
    labels = SERIES_LABELS[expect.series]
    keys = sorted(tuple(s.labels.get(label, "") for label in labels) for s in found)
    problems: list[str] = []
    if expect.series in SERIES_COUNT:
        if len(set(keys)) != len(keys) or len(keys) != SERIES_COUNT[expect.series]:
            problems.append(f"expected {SERIES_COUNT[expect.series]} {expect.series}, got {keys}")
    else:
        wanted = sorted(SERIES_WANTED[expect.series])
        if keys != wanted:  # sorted lists: a duplicate series counts too
            problems.append(f"expected one series per {expect.series} {wanted}, got {keys}")
    for s in found:
        if not expect.check(s.labels, s.value):
            problems.append(f"value {s.value} of {s.labels} fails {expect.check.__name__}")
    return problems


# --------------------------------------------------------------------- tests


def test_grafana_substitution_rejects_unknown_variables() -> None:
    expr = 'rate(x{job=~"$job", p=~"${provider:regex}"}[$__rate_interval])'
    assert grafana_to_promql(expr, any_values()) == 'rate(x{job=~".*", p=~".*"}[1m])'
    with pytest.raises(AssertionError, match=r"unknown Grafana variable \$tenant"):
        grafana_to_promql('x{tenant=~"$tenant"}', any_values())


def test_expectations_can_fail() -> None:
    every_provider = [Sample({"provider": name}, 1.0) for name in sorted(PROVIDER_NAMES)]
    assert problems_with(Expect("provider", _equals(1)), every_provider) == []
    assert problems_with(Expect("provider"), every_provider[1:])  # one missing
    assert problems_with(Expect("provider"), [*every_provider, every_provider[0]])  # a duplicate
    assert problems_with(Expect("provider", _equals(2)), every_provider)  # a wrong value
    assert problems_with(Expect("empty"), every_provider[:1])
    assert problems_with(Expect("single"), [])


def test_dashboard_variables_resolve_to_the_live_labels(
    prometheus: Prometheus, exporter: Exporter, healthy: Healthy
) -> None:
    expected = {"job": [JOB], "instance": [exporter.address], "provider": sorted(PROVIDER_NAMES),
                "probe": sorted({probe for _, probe in PROBES})}
    selectors = variable_selectors()
    assert set(selectors) == set(expected)
    values = live_values(exporter)
    for name, (selector, label) in selectors.items():
        match = grafana_to_promql(selector, values)
        found = prometheus.api(f"label/{label}/values", **{"match[]": match})
        assert sorted(found) == expected[name], (name, match)


def test_every_panel_is_classified() -> None:
    titles = {title for title, _ in TARGETS}
    assert titles - set(DASHBOARD_EXPECTATIONS) == set(), "classify the new panel(s)"
    assert set(DASHBOARD_EXPECTATIONS) - titles == set(), "stale expectation(s)"


@pytest.mark.parametrize("index", range(len(TARGETS)), ids=TARGET_IDS)
def test_dashboard_query_while_healthy(index: int, healthy: Healthy) -> None:
    title, expr = TARGETS[index]
    expect = DASHBOARD_EXPECTATIONS[title]
    for mode in ("any", "live"):
        answer = healthy.dashboard[(index, mode)]
        assert answer["status"] == "success", f"{mode}: {expr}: {answer}"
        problems = problems_with(expect, samples(answer))
        assert problems == [], f"{title} ({mode} variables; {expect.why}): {expr}"


def test_token_time_left_is_a_sawtooth(healthy: Healthy) -> None:
    # The last 40 s of the "Token time left" panel: falling one second per
    # second, jumping back up at each renewal.
    by_provider = {r["metric"]["provider"]: [float(v) for _, v in r["values"]]
                   for r in healthy.time_left}
    assert set(by_provider) == PROVIDER_NAMES
    for provider, values in by_provider.items():
        steps = [b - a for a, b in itertools.pairwise(values)]
        jumps = [s for s in steps if s > 0]
        assert jumps, f"{provider}: no renewal in {values}"
        assert all(s > 1 for s in jumps), f"{provider}: time left grew slowly: {steps}"
        falling = [s for s in steps if s <= 0]
        assert falling and all(-1.5 < s < -0.5 for s in falling), f"{provider}: {steps}"
