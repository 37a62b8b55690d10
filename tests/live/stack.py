"""What the live tests run and how they ask Prometheus.

The set-up (five simulated providers, the provider file and the secrets the
exporter reads from its environment), the subprocesses, Prometheus's HTTP API
as ``Prometheus``, the substitution of Grafana's variables into a panel's
query, and the ``Healthy`` snapshot the ``healthy`` fixture (conftest.py) takes.
"""

from __future__ import annotations

import copy
import re
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx

from exporter.simulator import SimulatedProvider
from tests.harness import wait_for
from tests.promql import DASHBOARD_FILE, dashboard_keyed_targets, load_dashboard, load_rules

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_INSTALL_HINT = (
    "The Prometheus server is required for the dashboard and alert-rule integration tests. "
    "Install it with `apt-get install prometheus` (Debian/Ubuntu; it also ships promtool)."
)
JOB = "token-health-exporter"  # the mixin's default selector: job="token-health-exporter"
SCRAPE_INTERVAL = "1s"
RULE_FOR = "1s"  # every alert's `for:` in the test copy of the rules
# Grafana's built-in interval variables. $__rate_interval must cover at least
# four scrapes for rate() to be reliable; 1m is 60 of them.
GRAFANA_INTERVALS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "5m",
    "__range_s": "300",
    "__range_ms": "300000",
}
_GRAFANA_VARIABLE = re.compile(
    r"\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)|\[\[([A-Za-z0-9_]+)\]\]"
)
STARTUP_TIMEOUT = 20.0
WARMUP_TIMEOUT = 45.0
ALERT_TIMEOUT = 30.0
ACTIVE = ("pending", "firing")


# ------------------------------------------------------------------ the setup


@dataclass(frozen=True)
class ProbeSetup:
    name: str
    path: str
    auth: str = "bearer"


@dataclass(frozen=True)
class ProviderSetup:
    kind: str
    lifetime: int  # seconds; the simulator issues tokens this long
    probes: tuple[ProbeSetup, ...]
    probe_interval: str = "1s"
    extra: Mapping[str, Any] = field(default_factory=dict)  # more provider config keys

    @property
    def name(self) -> str:
        return f"{self.kind}-it"


SECRET_EXPIRES_AT = (datetime.now(UTC) + timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%SZ")
PROVIDERS: tuple[ProviderSetup, ...] = (
    # Probed every 2 s rather than 1 s. Each SimpleDocs renewal revokes the
    # previous token, and the exporter counts a probe that was in flight with
    # that token as a token_revoked failure (an exporter bug), which would
    # raise TokenHealthTokenRevoked here. A loopback probe takes ~2 ms, so the
    # odds are about 1 in 1000 per renewal; fewer probes make them smaller.
    ProviderSetup("simpledocs", 24, (ProbeSetup("list-documents", "/v1/documents"),),
                  probe_interval="2s", extra={"scope": "read write"}),
    ProviderSetup("smartdocumentor", 20, (ProbeSetup("templates", "/api/v1/templates"),),
                  extra={"client_secret_expires_at": SECRET_EXPIRES_AT}),
    ProviderSetup("simplifi", 20, (ProbeSetup("employees", "/api/v1/employees"),)),
    ProviderSetup("simplestore", 20, (ProbeSetup("products", "/api/v1/products"),)),
    ProviderSetup(
        "dokstamp", 24,
        (ProbeSetup("documents", "/api/v1/documents"),
         ProbeSetup("public-download",
                    "/files/0b6f1c8e-5d1e-4c55-9a3e-2f7d1c9b8a11/download", auth="none")),
        extra={"headers": {"X-Tenant": "it-tenant"}},
    ),
)
BY_NAME = {p.name: p for p in PROVIDERS}
PROVIDER_NAMES = frozenset(BY_NAME)
PROBES = frozenset((p.name, probe.name) for p in PROVIDERS for probe in p.probes)
SECRET_PROVIDERS = frozenset(p.name for p in PROVIDERS if "client_secret_expires_at" in p.extra)
GRANTED_SCOPES = frozenset({
    ("simpledocs-it", "read"), ("simpledocs-it", "write"),
    ("smartdocumentor-it", "WebAPI"),  # the preset's required scope
})
FAULTY = BY_NAME["simplestore-it"]  # the provider whose credentials the fault test breaks


def client_credentials(kind: str) -> tuple[str, str]:
    return f"it-{kind}", f"it-secret-{kind}-Qx7v2LmN9pR4"


def exporter_config(providers: Mapping[str, SimulatedProvider]) -> dict[str, Any]:
    """The provider file; client ids and secrets come from ``secret_env()``."""
    entries = []
    for setup in PROVIDERS:
        sim = providers[setup.kind]
        var = f"IT_{setup.kind.upper()}"
        entries.append({
            "name": setup.name,
            "preset": setup.kind,
            "token_url": sim.token_url,
            "client_id": f"${{{var}_CLIENT_ID}}",
            "client_secret": f"${{{var}_CLIENT_SECRET}}",
            "probe_interval": setup.probe_interval,
            **setup.extra,
            "probes": [
                # Below the shortest probe interval (1 s), as the config requires.
                {"name": probe.name, "url": sim.base_url + probe.path, "auth": probe.auth,
                 "timeout": "800ms"}
                for probe in setup.probes
            ],
        })
    return {
        "defaults": {
            "timeout": "2s",
            "renew_at_fraction": 0.67,
            "backoff_initial": "200ms",
            "backoff_max": "1s",
        },
        "providers": entries,
    }


def secret_env() -> dict[str, str]:
    env = {}
    for setup in PROVIDERS:
        client_id, secret = client_credentials(setup.kind)
        env[f"IT_{setup.kind.upper()}_CLIENT_ID"] = client_id
        env[f"IT_{setup.kind.upper()}_CLIENT_SECRET"] = secret
    return env


# ------------------------------------------------------------------- helpers


def prometheus_path() -> Path:
    """The Prometheus server binary; raises AssertionError saying how to install it."""
    found = shutil.which("prometheus")
    if found is None:
        raise AssertionError(f"prometheus not found on PATH. {PROMETHEUS_INSTALL_HINT}")
    return Path(found)


def wait_until(probe: Callable[[], T | None], timeout: float, message: str,
               interval: float = 0.25) -> T:
    """``tests.harness.wait_for`` at the live stack's pace (a scrape, a rule pass)."""
    return wait_for(probe, timeout=timeout, interval=interval, message=message)


def log_tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@dataclass
class Process:
    """A subprocess whose stdout and stderr go to a log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    what: str

    @classmethod
    def start(cls, what: str, args: list[str], log: Path, *, cwd: Path,
              env: Mapping[str, str] | None = None) -> Process:
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=cwd, env=env)
        return cls(proc, log, what)

    def assert_alive(self) -> None:
        code = self.proc.poll()
        assert code is None, f"{self.what} exited with {code}:\n{log_tail(self.log)}"

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class Sample:
    labels: dict[str, str]
    value: float


def samples(answer: dict[str, Any]) -> list[Sample]:
    """The samples of a successful instant query (a scalar is one unlabelled sample)."""
    data = answer["data"]
    if data["resultType"] == "scalar":
        return [Sample({}, float(data["result"][1]))]
    assert data["resultType"] == "vector", data["resultType"]
    return [Sample(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]


@dataclass
class Prometheus:
    process: Process
    client: httpx.Client

    def query(self, expr: str) -> dict[str, Any]:
        """The whole /api/v1/query answer (``status`` is "error" for a bad query)."""
        response = self.client.get("/api/v1/query", params={"query": expr})
        answer: dict[str, Any] = response.json()
        return answer

    def vector(self, expr: str) -> list[Sample]:
        answer = self.query(expr)
        assert answer["status"] == "success", f"{expr}: {answer}"
        return samples(answer)

    def api(self, path: str, **params: str) -> Any:
        response = self.client.get(f"/api/v1/{path}", params=params)
        answer = response.json()
        assert answer["status"] == "success", f"/api/v1/{path}: {answer}"
        return answer["data"]

    def active_alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts (resolved ones are not listed by the API)."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        assert all(a["state"] in ACTIVE for a in alerts), alerts
        return alerts


@dataclass
class Exporter:
    process: Process
    address: str  # host:port, which is also Prometheus's `instance` label

    @property
    def url(self) -> str:
        return f"http://{self.address}"


def grafana_to_promql(expr: str, variables: Mapping[str, str],
                      rate_interval: str | None = None) -> str:
    """Substitute Grafana's interval variables and the dashboard's own variables.

    An unknown variable is an error, not a silent ``.*``: a misspelt variable
    in a panel must not pass. ``rate_interval`` overrides ``$__rate_interval``.
    """
    intervals = dict(GRAFANA_INTERVALS)
    if rate_interval is not None:
        intervals["__rate_interval"] = rate_interval

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name in intervals:
            return intervals[name]
        if name in variables:
            return variables[name]
        raise AssertionError(f"unknown Grafana variable ${name} in {expr!r}")

    return _GRAFANA_VARIABLE.sub(replace, expr)


def any_values() -> dict[str, str]:
    """The dashboard's variables set to "All" (their allValue)."""
    return {"job": ".*", "instance": ".*", "provider": ".*", "probe": ".*"}


def live_values(exporter: Exporter) -> dict[str, str]:
    """The dashboard's variables set to this set-up's values, as Grafana formats a
    multi-value selection inside a regex matcher."""
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", n) for n in PROVIDER_NAMES)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", probe) for _, probe in PROBES)
    return {
        "job": JOB,
        "instance": exporter.address,
        "provider": "(" + "|".join(sorted(PROVIDER_NAMES)) + ")",
        "probe": "(" + "|".join(sorted({probe for _, probe in PROBES})) + ")",
    }


def shorten_for(doc: dict[str, Any], duration: str) -> dict[str, Any]:
    """A copy of a rule-file document with every ``for:`` set to ``duration``."""
    shortened = copy.deepcopy(doc)
    for group in shortened["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = duration
    return shortened


def variable_selectors() -> dict[str, tuple[str, str]]:
    """Dashboard variable -> (selector, label) of its ``label_values(selector, label)``."""
    found: dict[str, tuple[str, str]] = {}
    for var in load_dashboard(DASHBOARD_FILE)["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", str(query))
        assert match, query
        found[var["name"]] = (match.group(1), match.group(2))
    return found


# ------------------------------------------------------------ what healthy is


@dataclass
class Healthy:
    """What Prometheus said while every provider was healthy, before any fault."""

    dashboard: dict[tuple[int, str], dict[str, Any]]  # (target index, variable mode) -> answer
    rules: dict[str, dict[str, Any]]  # alert name -> answer to its expression
    rule_groups: list[dict[str, Any]]  # /api/v1/rules
    alerts_seen: list[dict[str, Any]]  # every pending/firing alert observed
    observed: float  # seconds over which alerts_seen was collected
    time_left: list[dict[str, Any]]  # range query of "Token time left"


def renewed_everywhere(prometheus: Prometheus) -> bool:
    """Every provider's token was renewed while Prometheus was scraping."""
    renewed = prometheus.vector(
        f'changes(oauth_token_expiration_timestamp_seconds{{job="{JOB}"}}[1m]) > 0')
    requested = prometheus.vector(
        f'increase(oauth_token_refresh_attempts_total{{job="{JOB}"}}[1m]) > 0')
    return ({s.labels["provider"] for s in renewed} == PROVIDER_NAMES
            and {s.labels["provider"] for s in requested} == PROVIDER_NAMES)


TARGETS = dashboard_keyed_targets()
TARGET_IDS = [f"{i}-{title}" for i, (title, _) in enumerate(TARGETS)]
ALERT_RULES = [rule for rule in load_rules() if "alert" in rule]
ALERT_NAMES = [str(rule["alert"]) for rule in ALERT_RULES]
