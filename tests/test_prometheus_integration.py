"""The dashboard and the alert rules, live: a real Prometheus scrapes a real exporter.

Set-up, once for the module (about half a minute in all):

- the five provider simulators run in this process, with token lifetimes of
  20-24 s so that renewals (the token-time-left sawtooth) happen while we watch;
- the exporter runs as a subprocess (``python -m exporter``) against them,
  probing every 1-2 s, with a fast backoff so that faults show at once;
- Prometheus 2.42 (Debian's ``prometheus`` package) scrapes it every second
  as job ``token-health-exporter`` and evaluates a test copy of
  ``alerts/token-health.rules.yml`` in which every ``for:`` is 1 s.

Then, in this order (``healthy`` is a fixture every later test depends on):

1. every metric the dashboard and the rules read is on the exporter's
   ``/metrics`` and in Prometheus;
2. healthy phase: every dashboard query and every alert expression evaluates
   in Prometheus; the ones that describe health return the expected series
   and values (``DASHBOARD_EXPECTATIONS`` says which and why), every alert
   expression is empty and no alert is pending or firing at any time;
3. fault: SimpleStore starts refusing the exporter's client credentials and
   revokes its token; TokenHealthNoValidToken fires for that provider only
   (with for: 1s, pending lasts one evaluation), TokenHealthCredentialsRejected
   is held back by the root-cause hierarchy although its own condition holds
   (docs/alerts.md), the dashboard shows the fault (providers without a valid
   token, failures by class, a probe success ratio below 1, never -Inf), and
   the alert resolves when the fault is cleared.

Every alert expression, not only the health-sensitive ones, must be empty
while healthy: the set-up gives none a cause (the one client secret expires in
a year, every requested scope is granted, no probe expects a refusal such as
SimpleDocs' read-only write probe in --demo).

Nothing is skipped: without ``/usr/bin/prometheus`` the tests fail and say how
to install it.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.simulator import SimulatedProvider
from tests.promql import (
    CONDITIONAL_METRICS,
    DASHBOARD_FILE,
    PROMETHEUS_SYNTHETIC,
    RULES_FILE,
    SPEC_METRICS,
    dashboard_exprs,
    dashboard_keyed_targets,
    load_dashboard,
    load_rules,
    metric_names,
)
from tests.promtool import run_promtool
from tests.scripted import free_port

#: A real Prometheus server for the whole module: every test here is slow.
pytestmark = pytest.mark.slow

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
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
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


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


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def simulators() -> Iterator[dict[str, SimulatedProvider]]:
    """The five providers, in this process. SimpleDocs keeps its 10 token
    requests/min limit: 24 s tokens renewed at ~2/3 of their life stay well
    under it."""
    started: dict[str, SimulatedProvider] = {}
    try:
        for setup in PROVIDERS:
            sim = SimulatedProvider(setup.kind, host="127.0.0.1", lifetime=setup.lifetime)
            sim.add_client(*client_credentials(setup.kind))
            started[setup.kind] = sim.start()
        yield started
    finally:
        for sim in started.values():
            sim.stop()


@pytest.fixture(scope="module")
def exporter(simulators: dict[str, SimulatedProvider],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    workdir = tmp_path_factory.mktemp("exporter")
    config = workdir / "providers.yaml"
    config.write_text(yaml.safe_dump(exporter_config(simulators), sort_keys=False))
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKEN_EXPORTER_")}
    env.update(secret_env(), PYTHONUNBUFFERED="1")
    process = Process.start(
        "the exporter",
        [sys.executable, "-m", "exporter", "--config.file", str(config),
         "--web.listen-address", address, "--log.level", "info"],
        workdir / "exporter.log", cwd=REPO, env=env,
    )
    try:
        running = Exporter(process, address)
        with httpx.Client(timeout=5, trust_env=False) as client:

            def ready() -> bool:
                process.assert_alive()
                try:
                    return client.get(running.url + "/-/ready").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(ready, STARTUP_TIMEOUT, "the exporter's /-/ready")
        yield running
    finally:
        process.stop()


@pytest.fixture(scope="module")
def rules_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """alerts/token-health.rules.yml with every ``for:`` shortened to RULE_FOR."""
    path = tmp_path_factory.mktemp("rules") / "token-health.rules.yml"
    doc = yaml.safe_load(RULES_FILE.read_text())
    path.write_text(yaml.safe_dump(shorten_for(doc, RULE_FOR), sort_keys=False))
    done = run_promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    return path


@pytest.fixture(scope="module")
def prometheus(exporter: Exporter, rules_copy: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = prometheus_path()
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "rule_files": [str(rules_copy)],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": [exporter.address]}]},
        ],
    }, sort_keys=False))
    checked = run_promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    address = f"127.0.0.1:{free_port()}"
    process = Process.start(
        "prometheus",
        [str(binary), f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address={address}", "--log.level=info"],
        workdir / "prometheus.log", cwd=workdir,
    )
    client = httpx.Client(base_url=f"http://{address}", timeout=10, trust_env=False)
    try:

        def ready() -> bool:
            process.assert_alive()
            try:
                return client.get("/-/ready").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, STARTUP_TIMEOUT, "Prometheus's /-/ready")
        yield Prometheus(process, client)
    finally:
        client.close()
        process.stop()


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


@pytest.fixture(scope="module")
def healthy(prometheus: Prometheus, exporter: Exporter) -> Healthy:
    """Wait until the set-up is warm, watching the alerts, then query everything."""
    up = f'up{{job="{JOB}"}}'

    def scraped() -> bool:
        prometheus.process.assert_alive()
        exporter.process.assert_alive()
        targets = [t for t in prometheus.api("targets")["activeTargets"]
                   if t["labels"].get("job") == JOB]
        if not (len(targets) == 1 and targets[0]["health"] == "up"):
            return False
        count = prometheus.vector(f"count_over_time({up}[1m])")
        return bool(count) and count[0].value >= 3

    wait_until(scraped, STARTUP_TIMEOUT, f"Prometheus to scrape {exporter.address} three times")

    # From here on nothing may alert: collect every active alert while waiting
    # for each provider's first renewal (so rate() panels have data).
    alerts_seen: list[dict[str, Any]] = []
    started = time.monotonic()

    def warm() -> bool:
        exporter.process.assert_alive()
        alerts_seen.extend(prometheus.active_alerts())
        return renewed_everywhere(prometheus)

    wait_until(warm, WARMUP_TIMEOUT, "a token renewal of every provider, seen by Prometheus",
               interval=0.5)

    variables = {"any": any_values(), "live": live_values(exporter)}
    dashboard = {
        (i, mode): prometheus.query(grafana_to_promql(expr, values))
        for i, (_, expr) in enumerate(dashboard_keyed_targets())
        for mode, values in variables.items()
    }
    rules = {rule["alert"]: prometheus.query(str(rule["expr"]))
             for rule in load_rules() if "alert" in rule}
    rule_groups = prometheus.api("rules")["groups"]
    end = time.time()
    time_left_expr = grafana_to_promql(
        dict(dashboard_keyed_targets())["Token time left"], variables["live"])
    time_left = prometheus.api("query_range", query=time_left_expr, start=str(end - 40),
                               end=str(end), step="1")["result"]
    alerts_seen.extend(prometheus.active_alerts())
    return Healthy(dashboard, rules, rule_groups, alerts_seen, time.monotonic() - started,
                   time_left)


# ---------------------------------------------------------------- expectations


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


TARGETS = dashboard_keyed_targets()
TARGET_IDS = [f"{i}-{title}" for i, (title, _) in enumerate(TARGETS)]
ALERT_RULES = [rule for rule in load_rules() if "alert" in rule]
ALERT_NAMES = [str(rule["alert"]) for rule in ALERT_RULES]


# --------------------------------------------------------------------- tests


def test_missing_prometheus_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(AssertionError, match=r"apt-get install prometheus"):
        prometheus_path()


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


def live_sample_names(exporter: Exporter) -> set[str]:
    response = httpx.get(exporter.url + "/metrics", timeout=10, trust_env=False)
    assert response.status_code == 200
    return {s.name for family in text_string_to_metric_families(response.text)
            for s in family.samples}


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


def panel_samples(prometheus: Prometheus, exporter: Exporter, key: str,
                  rate_interval: str | None = None) -> list[Sample]:
    (expr,) = [e for k, e in TARGETS if k == key]
    return prometheus.vector(grafana_to_promql(expr, live_values(exporter), rate_interval))


def alert_expr(name: str) -> str:
    (expr,) = [str(r["expr"]) for r in ALERT_RULES if r["alert"] == name]
    return expr


HOLD = "\n)\nunless on (cluster, job, instance, provider)\n(\n"


def without_hierarchy(expr: str) -> str:
    """An alert expression without its root-cause hierarchy clause: the
    alert's own condition (docs/alerts.md)."""
    assert expr.count(HOLD) == 1, expr
    own = expr.split(HOLD)[0]
    assert own.startswith("(\n")
    return own[2:]


def test_wrong_credentials_raise_no_valid_token_for_that_provider_only(
    healthy: Healthy, prometheus: Prometheus, exporter: Exporter,
    simulators: dict[str, SimulatedProvider],
) -> None:
    sim = simulators[FAULTY.kind]
    seen: list[dict[str, Any]] = []

    def no_valid_token_firing() -> list[dict[str, Any]]:
        exporter.process.assert_alive()
        alerts = prometheus.active_alerts()
        seen.extend(alerts)
        return [a for a in alerts if a["labels"]["alertname"] == "TokenHealthNoValidToken"
                and a["state"] == "firing"]

    sim.set_faults(wrong_credentials=True)
    try:
        # Revoking makes the next probe fail with invalid_token, so the
        # exporter asks the token endpoint at once instead of at renewal time.
        sim.revoke_all()
        firing = wait_until(no_valid_token_firing, ALERT_TIMEOUT,
                            "TokenHealthNoValidToken to fire", interval=0.5)
        assert [a["labels"] for a in firing] == [{
            "alertname": "TokenHealthNoValidToken", "severity": "critical", "layer": "token",
            "job": JOB, "instance": exporter.address, "provider": FAULTY.name}]
        assert "<error expanding template" not in str(firing[0]["annotations"])
        description = firing[0]["annotations"]["description"]
        assert FAULTY.name in description and "invalid_client" in description

        # The dashboard shows it.
        assert [s.value for s in panel_samples(
            prometheus, exporter, "Providers without a valid token")] == [1]
        status = {s.labels["provider"]: s for s in panel_samples(
            prometheus, exporter, "Credential status#A")}
        assert (status[FAULTY.name].value, status[FAULTY.name].labels["runs_out"]) == (
            0, "no valid token")
        failures = panel_samples(prometheus, exporter, "Token request failures by class")
        assert {(s.labels["provider"], s.labels["error"]) for s in failures} == {
            (FAULTY.name, "invalid_client")}
        # Probe runs skipped for want of a token (error="no_token") count as
        # failed runs in the dashboard's ratio; it must stay a ratio (below 1
        # for the broken provider, 1 elsewhere), never -Inf or NaN.
        def skipped() -> list[Sample]:
            return prometheus.vector(
                f'oauth_probe_failures_total{{provider="{FAULTY.name}",error="no_token"}}')

        wait_until(skipped, ALERT_TIMEOUT, "a probe run skipped with no_token")
        ratios = {(s.labels["provider"], s.labels["probe"]): s.value
                  for s in panel_samples(prometheus, exporter, "Probe success ratio (1h)")}
        assert set(ratios) == PROBES
        for key, ratio in ratios.items():
            if key[0] == FAULTY.name:
                assert 0 <= ratio < 1, (key, ratio)
            else:
                assert ratio == 1, (key, ratio)

        # TokenHealthCredentialsRejected: its own condition selects exactly
        # this provider with the right class, but the hierarchy holds it back
        # while the provider has no valid token: one page, not two.
        def rejected_condition() -> list[Sample]:
            return prometheus.vector(
                without_hierarchy(alert_expr("TokenHealthCredentialsRejected")))

        rejected = wait_until(rejected_condition, ALERT_TIMEOUT,
                              "invalid_client as the last token error in Prometheus")
        assert [(s.labels["provider"], s.labels["error"]) for s in rejected] == [
            (FAULTY.name, "invalid_client")]
        assert prometheus.vector(alert_expr("TokenHealthCredentialsRejected")) == []
        seen.extend(prometheus.active_alerts())
    finally:
        sim.clear_faults()

    others = sorted({(a["labels"]["alertname"], a["labels"].get("provider", "-"))
                     for a in seen if a["labels"].get("provider") != FAULTY.name})
    assert others == [], "alerts for providers that were never broken"
    # A probe's own failure (invalid_token) shows before the token is dropped,
    # so TokenHealthApiRefusesToken or TokenHealthProbeFailing may be pending
    # for a moment; nothing but the missing token may fire.
    assert {a["labels"]["alertname"] for a in seen if a["state"] == "firing"} == {
        "TokenHealthNoValidToken"}

    # Fixed credentials: the next retry (backoff at most 1 s) gets a token.
    def recovered() -> bool:
        valid = prometheus.vector(f'oauth_token_valid{{provider="{FAULTY.name}"}}')
        alerts = [a for a in prometheus.active_alerts()
                  if a["labels"].get("provider") == FAULTY.name]
        return [s.value for s in valid] == [1] and not alerts

    wait_until(recovered, ALERT_TIMEOUT, f"{FAULTY.name} to recover and its alerts to resolve")


def test_logs_show_no_errors(exporter: Exporter, prometheus: Prometheus, healthy: Healthy) -> None:
    # Last in the module, so it also covers the fault above when that ran.
    exporter_log = exporter.process.log.read_text()
    assert "Traceback" not in exporter_log and " ERROR " not in exporter_log, log_tail(
        exporter.process.log)
    for kind in BY_NAME.values():
        assert client_credentials(kind.kind)[1] not in exporter_log, "a client secret was logged"
    prometheus_log = prometheus.process.log.read_text().splitlines()
    problems = [line for line in prometheus_log
                if "level=error" in line or "template" in line.lower()]
    assert problems == []
