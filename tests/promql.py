"""A small PromQL reader for static checks on the alert rules and the dashboard.

It is not a parser (promtool decides whether an expression is valid); it
tokenizes an expression well enough to answer three questions:

- which metrics does it read? (``metric_names``)
- with which label matchers, inside which functions? (``selectors``)
- does it use a counter or histogram series outside rate()/increase()?
  (``counter_violations``)

``rule_exprs()`` and ``dashboard_exprs()`` return every expression of
alerts/token-health.rules.yml and dashboards/token-health.json, so a live test
can compare the metrics they read with what the exporter serves on /metrics.
Note that ``up`` (in ``PROMETHEUS_SYNTHETIC``) is made by Prometheus, not by
the exporter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
RULES_FILE = REPO / "alerts" / "token-health.rules.yml"
DASHBOARD_FILE = REPO / "dashboards" / "token-health.json"

# The exporter's metrics (SPEC.md's metric table), as series names on /metrics.
# Kept here rather than parsed from SPEC.md so a change of contract shows up
# as a diff of this list; tests/live/test_live_contract.py compares it
# with what the running exporter serves.
_GAUGES = {
    "oauth_token_expiration_timestamp_seconds",
    "oauth_token_expires_in_seconds",
    "oauth_token_issued_timestamp_seconds",
    "oauth_token_next_renewal_timestamp_seconds",
    "oauth_token_valid",
    "oauth_token_pending",
    "oauth_token_refresh_consecutive_failures",
    "oauth_token_refresh_last_error",
    "oauth_token_last_refresh_success_timestamp_seconds",
    "oauth_token_scope_granted",
    "oauth_client_secret_expiration_timestamp_seconds",
    "oauth_client_certificate_expiration_timestamp_seconds",
    "oauth_discovery_last_success_timestamp_seconds",
    "oauth_probe_success",
    "oauth_probe_http_status_code",
    "oauth_probe_consecutive_failures",
    "oauth_probe_last_error",
    "oauth_probe_last_success_timestamp_seconds",
    "oauth_provider_info",
    "oauth_exporter_build_info",
    "oauth_exporter_config_last_reload_successful",
    "oauth_exporter_http_connections_open",
}
_COUNTERS = {
    "oauth_token_refresh_attempts_total",
    "oauth_token_refresh_failures_total",
    "oauth_discovery_failures_total",
    "oauth_probe_attempts_total",
    "oauth_probe_failures_total",
    "oauth_exporter_renewal_stalls_total",
    "oauth_exporter_http_connections_shed_total",
}
_HISTOGRAMS = {"oauth_token_refresh_duration_seconds", "oauth_probe_duration_seconds"}
# Histograms carry _sum/_count only, unless the exporter is started with
# bucketed histograms (then _bucket too: the mixin's latencyBuckets).
SPEC_METRICS: frozenset[str] = frozenset(
    _GAUGES | _COUNTERS | {h + s for h in _HISTOGRAMS for s in ("_sum", "_count")}
)
BUCKET_METRICS: frozenset[str] = frozenset(h + "_bucket" for h in _HISTOGRAMS)
# Series that exist only in some situations, so a healthy exporter need not
# serve them: failure counters by class (created by the first failure of the
# class), last-error gauges (only while failing), expiries of things not
# configured, discovery (providers with `issuer` only).
CONDITIONAL_METRICS: frozenset[str] = frozenset(
    {
        "oauth_token_refresh_failures_total",
        "oauth_probe_failures_total",
        "oauth_token_refresh_last_error",
        "oauth_probe_last_error",
        "oauth_client_secret_expiration_timestamp_seconds",
        "oauth_client_certificate_expiration_timestamp_seconds",
        "oauth_token_scope_granted",
        "oauth_discovery_last_success_timestamp_seconds",
        "oauth_discovery_failures_total",
        "oauth_token_expiration_timestamp_seconds",
        "oauth_token_expires_in_seconds",
        "oauth_token_issued_timestamp_seconds",
    }
)
# Series that Prometheus itself attaches to a scrape target.
PROMETHEUS_SYNTHETIC: frozenset[str] = frozenset({"up"})

# Series suffixes that only make sense inside rate()/increase().
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
COUNTER_FUNCTIONS = frozenset({"rate", "irate", "increase"})

AGGREGATIONS = frozenset(
    {
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    }
)
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = GROUPING | {"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"}

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*|\[\[[^\]]*\]\])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[A-Za-z0-9]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@:])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokenize(expr: str) -> list[Token]:
    """The expression's tokens, without whitespace and comments."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot tokenize {expr[pos : pos + 20]!r} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind not in ("ws", "comment"):
            tokens.append(Token(kind, match.group()))
        pos = match.end()
    return tokens


@dataclass(frozen=True)
class Selector:
    """One vector selector: ``name{matchers}[range]`` and where it sits."""

    name: str
    matchers: tuple[tuple[str, str, str], ...] = ()  # (label, operator, quoted value)
    range: str | None = None  # the text between [ and ], if a range selector
    functions: tuple[str, ...] = field(default=())  # enclosing calls, outermost first
    offset: str | None = None  # the duration of an `offset` modifier
    followed_by: str = ""  # the token after the selector and its modifiers

    def matcher(self, label: str) -> tuple[str, str] | None:
        for name, op, value in self.matchers:
            if name == label:
                return op, value
        return None


def _closing(tokens: list[Token], start: int, open_: str, close: str) -> int:
    """Index of the token that closes the bracket opened at ``start``."""
    depth = 0
    for i in range(start, len(tokens)):
        if tokens[i].text == open_:
            depth += 1
        elif tokens[i].text == close:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced {open_!r} in {' '.join(t.text for t in tokens)!r}")


def _matchers(tokens: list[Token]) -> tuple[tuple[str, str, str], ...]:
    found = []
    for i in range(len(tokens) - 2):
        name, op, value = tokens[i : i + 3]
        if (
            name.kind == "ident"
            and op.text in ("=", "!=", "=~", "!~")
            and value.kind == "string"
            and (i == 0 or tokens[i - 1].text == ",")
        ):
            found.append((name.text, op.text, value.text))
    return tuple(found)


def selectors(expr: str) -> list[Selector]:
    """Every vector selector in ``expr``, in order."""
    tokens = tokenize(expr)
    found: list[Selector] = []
    stack: list[str] = []  # one entry per open "(": the call's name, or "" for plain parens
    pending = ""  # an aggregation whose "(" follows a by/without clause
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1].text if i + 1 < len(tokens) else ""
        name: str | None = None
        if tok.kind == "ident":
            low = tok.text.lower()
            if low in GROUPING and nxt == "(":
                i = _closing(tokens, i + 1, "(", ")") + 1
                continue
            if low in KEYWORDS:  # and/or/unless/bool/offset: "(" after them is plain
                i += 1
                continue
            if nxt == "(":
                stack.append(tok.text)
                pending = ""
                i += 2
                continue
            if tok.text in AGGREGATIONS:
                pending = tok.text
            else:
                name = tok.text
        elif tok.text == "{":
            name = ""  # a selector by matchers only: {__name__="..."}
        elif tok.text == "(":
            stack.append(pending)
            pending = ""
        elif tok.text == ")":
            if not stack:
                raise ValueError(f"unbalanced ')' in {expr!r}")
            stack.pop()
        elif tok.text == "[":
            # A subquery's range ([5m:1m]) after a parenthesised expression.
            i = _closing(tokens, i, "[", "]") + 1
            continue
        if name is None:
            i += 1
            continue
        # A selector: optional {matchers}, optional [range].
        j = i if tok.text == "{" else i + 1
        matchers: tuple[tuple[str, str, str], ...] = ()
        if j < len(tokens) and tokens[j].text == "{":
            end = _closing(tokens, j, "{", "}")
            matchers = _matchers(tokens[j + 1 : end])
            j = end + 1
        rng = None
        if j < len(tokens) and tokens[j].text == "[":
            end = _closing(tokens, j, "[", "]")
            rng = "".join(t.text for t in tokens[j + 1 : end])
            j = end + 1
        offset = None
        if j + 1 < len(tokens) and tokens[j].text.lower() == "offset":
            offset = tokens[j + 1].text
            j += 2
        if not name:
            for label, op, value in matchers:
                if label == "__name__" and op == "=":
                    name = value[1:-1]
        if name:
            after = tokens[j].text.lower() if j < len(tokens) else ""
            found.append(
                Selector(name, matchers, rng, tuple(f for f in stack if f), offset, after)
            )
        i = j
    if stack:
        raise ValueError(f"unbalanced '(' in {expr!r}")
    return found


def metric_names(expr: str) -> set[str]:
    """Names of the metrics ``expr`` reads (functions, keywords, labels and durations excluded)."""
    return {s.name for s in selectors(expr)}


def counter_violations(expr: str) -> list[str]:
    """Counter/histogram series (``*_total``, ``_bucket``, ``_count``, ``_sum``) not read
    directly by rate(), irate() or increase().

    Two uses of a raw counter are allowed, both from the mixin's lazyIncrease
    for counters whose series appear with their first event: an existence
    check (``x offset 1h``, whose value is never used) and ``x unless x offset
    1h``, the whole value of a series born within the window.
    """
    found = selectors(expr)
    violations = []
    for i, s in enumerate(found):
        if not s.name.endswith(COUNTER_SUFFIXES):
            continue
        if s.functions and s.functions[-1] in COUNTER_FUNCTIONS:
            continue
        if s.offset is not None and s.range is None:
            continue
        after = found[i + 1] if i + 1 < len(found) else None
        if (
            s.followed_by == "unless"
            and after is not None
            and after.offset is not None
            and (after.name, after.matchers) == (s.name, s.matchers)
        ):
            continue
        violations.append(s.name)
    return violations


# Grafana's built-in interval variables, and what they become for promtool.
GRAFANA_BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__interval_ms": "60000",
}


def substitute_grafana_variables(expr: str, default: str = ".*") -> str:
    """Replace Grafana variables so that promtool can parse the expression.

    Built-in intervals get a duration; dashboard variables (``$job``,
    ``${provider}``, ``${provider:regex}``, ``[[instance]]``) become ``default``,
    which suits their place inside ``=~"..."`` matchers.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return GRAFANA_BUILTINS.get(name, default)

    return re.sub(
        r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\[\[([A-Za-z0-9_]+)\]\]",
        replace,
        expr,
    )


# --------------------------------------------------------------------- files


def load_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """Every rule (alerting and recording) of a Prometheus rule file."""
    doc = yaml.safe_load(path.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def rule_exprs(path: Path = RULES_FILE) -> list[str]:
    """The expression of every rule in the alert rule file."""
    return [str(rule["expr"]) for rule in load_rules(path)]


def load_dashboard(path: Path = DASHBOARD_FILE) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, descending into rows' (collapsed) panels."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_targets(path: Path = DASHBOARD_FILE) -> list[tuple[str, str]]:
    """(panel title, expr) for every Prometheus query of every panel."""
    return [
        (panel.get("title", ""), target["expr"])
        for panel in iter_panels(load_dashboard(path)["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def dashboard_exprs(path: Path = DASHBOARD_FILE) -> list[str]:
    """Every panel query of the dashboard, with Grafana variables left in place."""
    return [expr for _, expr in dashboard_targets(path)]


def dashboard_keyed_targets(path: Path = DASHBOARD_FILE) -> list[tuple[str, str]]:
    """(key, expr) for every query: the panel title, or ``title#refId`` for a
    panel with several queries, so each query can have its own expectation."""
    keyed = []
    for panel in iter_panels(load_dashboard(path)["panels"]):
        targets = [t for t in panel.get("targets", []) if "expr" in t]
        for target in targets:
            title = panel.get("title", "")
            keyed.append((f"{title}#{target['refId']}" if len(targets) > 1 else title,
                          target["expr"]))
    return keyed
