"""The metrics contract: one family table, two renderers, golden expositions.

States are built directly (no network, fixed clock): the exposition for a
fixed state must match ``tests/golden/`` byte for byte, the direct renderer
must equal prometheus-client's encoders for the same state, and the cache
behind the direct renderer must never serve what the state no longer says.
Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 python -m pytest tests/test_collector.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import random
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from pydantic import SecretStr

import exporter.metrics
from exporter.cli import load_settings
from exporter.collector import Exposition, TokenHealthCollector, _value
from exporter.config import Config, parse_config
from exporter.errors import ErrorClass
from exporter.metrics import FAMILIES, Family, sample_names
from exporter.probes import ProbeRunner
from exporter.ratelimit import HostLimiter
from exporter.renewal import TokenManager
from exporter.state import ProbeState, ProviderState
from exporter.tokens import Token
from tests.promclient import go_float, om_families, om_latest, text_families
from tests.promtool import promtool_path
from tests.virtual import run_virtual

GOLDEN = Path(__file__).parent / "golden"
NOW = 1_900_000_000.0


def parse_openmetrics(text: str) -> list[Metric]:
    """Strict: raises on anything invalid in OpenMetrics 1.0."""
    return list(om_families(text))


def parse_text(text: str) -> list[Metric]:
    return list(text_families(text))


class Source:
    """A StateSource over states built by hand."""

    def __init__(self, states: list[ProviderState]) -> None:
        self.states = states
        self.config_reload_ok = True
        self.config_reload_time = NOW - 3600.0

    def provider_states(self) -> Iterable[ProviderState]:
        return list(self.states)


@pytest.fixture(autouse=True)
def fixed_build(monkeypatch: pytest.MonkeyPatch) -> None:
    # The real labels carry the git commit and the Python version: not golden material.
    monkeypatch.setattr(exporter.metrics, "build_labels", lambda: ("1.2.3", "abc1234", "3.11.7"))


FIXED_CONFIG = """
providers:
  - name: healthy
    preset: smartdocumentor
    client_id: a
    client_secret: s
    scope: WebAPI
    client_secret_expires_at: 2030-01-01T00:00:00Z
    probes:
      - {name: templates, url: "https://cloud.smartdocumentor.net/api/v1/templates"}
      - {name: head, url: "https://cloud.smartdocumentor.net/api/v1/templates", method: HEAD}
  - name: refused
    preset: simpledocs
    token_url: "https://api.simpledocs.example/oauth/token"
    client_id: b
    client_secret: s
    scope: read write
    probes:
      - {name: documents, url: "https://api.simpledocs.example/v1/documents"}
  - name: starting
    preset: generic
    token_url: "https://id.example.com:8443/token"
    client_id: c
    client_secret: s
    probes:
      - {name: api, url: "https://api.example.com/"}
"""


def fixed_states() -> list[ProviderState]:
    """Three credentials: healthy; token refused and a probe failing; still pending."""
    config = parse_config(FIXED_CONFIG, "fixed.yaml", {})
    healthy, refused, starting = (ProviderState(p) for p in config.providers)

    healthy.token = Token(SecretStr("t1"), NOW - 600.0, NOW + 3000.0, None, "expires_in")
    healthy.next_renewal = NOW + 1812.5
    healthy.attempts = healthy.completed = 3
    healthy.failures[ErrorClass.TIMEOUT] += 1
    healthy.last_success = NOW - 600.0
    for d in (0.12, 0.3, 0.07):
        healthy.duration.observe(d)
    for i, ps in enumerate(healthy.probes.values()):
        ps.attempts = 120 + i
        ps.success, ps.status = True, 200 if i == 0 else 204
        ps.last_run = ps.last_success = NOW - 10.0 - i
        for d in (0.04, 0.2):
            ps.duration.observe(d + i / 100)

    # Holds a token from before; its renewal keeps failing; a probe was refused.
    refused.token = Token(SecretStr("t2"), NOW - 7000.0, NOW + 200.0,
                          frozenset({"read"}), "expires_in")
    refused.token_rejected = True
    refused.next_renewal = NOW + 30.0
    refused.attempts = refused.completed = 5
    for error in (ErrorClass.INVALID_CLIENT, ErrorClass.INVALID_CLIENT, ErrorClass.SERVER_ERROR,
                  ErrorClass.INVALID_CLIENT):
        refused.failures[error] += 1
    refused.consecutive_failures = 2
    refused.last_error = ErrorClass.INVALID_CLIENT
    refused.last_success = NOW - 7000.0
    refused.duration.observe(1.5)
    docs = refused.probes["documents"]
    docs.attempts = 40
    docs.failures[ErrorClass.TOKEN_REVOKED] += 1
    docs.failures[ErrorClass.NO_TOKEN] += 3
    docs.consecutive_failures = 4
    docs.success, docs.status, docs.last_error = False, 0, ErrorClass.NO_TOKEN
    docs.last_run, docs.last_success = NOW - 5.0, NOW - 300.0
    docs.duration.observe(0.25)

    # The refused credential's issuer metadata: read once, then failing; and the
    # certificates it was loaded with.
    refused.discovery_last_success = NOW - 86000.0
    refused.discovery_failures = {"timeout": 2, "issuer_mismatch": 1}
    refused.provider = dataclasses.replace(
        refused.provider, certificates=(("tls", NOW + 30 * 86400.0),
                                        ("signing", NOW + 90 * 86400.0)))

    starting.attempts = 1  # in flight: nothing has come back yet
    return [healthy, refused, starting]


def collector_for(states: list[ProviderState], buckets: bool = False
                  ) -> tuple[TokenHealthCollector, CollectorRegistry]:
    collector = TokenHealthCollector(Source(states), clock=lambda: NOW,
                                     histogram_buckets=buckets)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return collector, registry


def check_golden(name: str, body: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once"
    assert body.decode() == path.read_text(encoding="utf-8"), f"{name} differs from golden"


@pytest.mark.parametrize("buckets", [False, True], ids=["sum-count", "buckets"])
def test_fixed_state_matches_golden_files_and_the_client_library(buckets: bool) -> None:
    collector, registry = collector_for(fixed_states(), buckets)
    text, om = collector.render(False), collector.render(True)
    stem = "exposition-buckets" if buckets else "exposition"
    check_golden(f"{stem}.prom", text)
    check_golden(f"{stem}.om", om)
    # The direct renderer is the library's encoders, made fast.
    assert text == generate_latest(registry)
    assert om == om_latest(registry)
    # Both parse with the library's strict parsers (a histogram without
    # buckets is invalid OpenMetrics, hence a summary when buckets are off).
    parse_openmetrics(om.decode())
    parse_text(text.decode())


def test_golden_exposition_passes_promtool() -> None:
    for name in ("exposition.prom", "exposition-buckets.prom"):
        proc = subprocess.run([str(promtool_path()), "check", "metrics"],
                              input=(GOLDEN / name).read_bytes(), capture_output=True,
                              timeout=60, check=False)
        assert proc.returncode == 0, name + proc.stdout.decode() + proc.stderr.decode()


def samples(states: list[ProviderState], buckets: bool = False) -> dict[tuple[str, frozenset[
        tuple[str, str]]], float]:
    _, registry = collector_for(states, buckets)
    return {(s.name, frozenset(s.labels.items())): s.value
            for m in registry.collect() for s in m.samples}


def value(states: list[ProviderState], name: str, **labels: str) -> float | None:
    return samples(states).get((name, frozenset(labels.items())))


def test_new_contract_values() -> None:
    states = fixed_states()
    assert value(states, "oauth_token_pending", provider="healthy") == 0.0
    assert value(states, "oauth_token_pending", provider="refused") == 0.0
    assert value(states, "oauth_token_pending", provider="starting") == 1.0
    assert value(states, "oauth_token_valid", provider="refused") == 0.0
    assert value(states, "oauth_token_expires_in_seconds", provider="healthy") == 3000.0
    # Failure classes: only those that happened, each with its count.
    refused_failures = {dict(k[1])["error"]: v for k, v in samples(states).items()
                        if k[0] == "oauth_token_refresh_failures_total"
                        and dict(k[1])["provider"] == "refused"}
    assert refused_failures == {"invalid_client": 3, "server_error": 1}
    assert value(states, "oauth_token_refresh_failures_total", provider="starting",
                 error="timeout") is None
    assert value(states, "oauth_token_refresh_consecutive_failures", provider="refused") == 2
    assert value(states, "oauth_token_refresh_consecutive_failures", provider="healthy") == 0
    assert value(states, "oauth_token_refresh_last_error", provider="refused",
                 error="invalid_client") == 1.0
    assert not [k for k in samples(states) if k[0] == "oauth_token_refresh_last_error"
                and dict(k[1])["provider"] == "healthy"]
    assert value(states, "oauth_probe_consecutive_failures", provider="refused",
                 probe="documents") == 4
    assert value(states, "oauth_probe_last_error", provider="refused", probe="documents",
                 error="no_token") == 1.0
    assert value(states, "oauth_token_scope_granted", provider="refused", scope="write") == 0.0
    # Latency: _sum and _count only, unless buckets are asked for.
    assert value(states, "oauth_probe_duration_seconds_count", provider="healthy",
                 probe="templates") == 2
    assert not [k for k in samples(states) if k[0].endswith("_bucket")]
    assert samples(states, buckets=True)[(
        "oauth_probe_duration_seconds_bucket",
        frozenset({"provider": "healthy", "probe": "templates", "le": "0.05"}.items()))] == 1.0
    assert value(states, "oauth_exporter_renewal_stalls_total") == 0


def test_sample_names_are_what_the_renderer_writes() -> None:
    for buckets in (False, True):
        collector, _ = collector_for(fixed_states(), buckets)
        written = {s.name for f in parse_text(collector.render().decode()) for s in f.samples}
        # The fixed state exercises every family.
        assert written == sample_names(buckets)


def test_renewal_stalls_are_read_from_the_source() -> None:
    source = Source(fixed_states())
    source.renewal_stalls = 7  # type: ignore[attr-defined]  # the lead's Exporter field
    collector = TokenHealthCollector(source, clock=lambda: NOW)
    assert b"\noauth_exporter_renewal_stalls_total 7.0\n" in collector.render()


# --------------------------------------------------------------------------- series budget


def healthy_states(n: int) -> list[ProviderState]:
    """``n`` healthy credentials, 2 probes each, with a scope and a secret expiry
    (the optional series present, the most a healthy credential exports)."""
    template = parse_config(
        "providers:\n  - name: template\n    preset: smartdocumentor\n    client_id: c\n"
        "    client_secret: s\n    client_secret_expires_at: 2030-01-01T00:00:00Z\n"
        "    probes:\n"
        "      - {name: templates, url: 'https://cloud.smartdocumentor.net/a'}\n"
        "      - {name: head, url: 'https://cloud.smartdocumentor.net/a'}\n",
        "n.yaml", {}).providers[0]
    states = []
    for i in range(n):
        st = ProviderState(dataclasses.replace(template, name=f"cred-{i:05d}"))
        st.token = Token(SecretStr("t"), NOW - 60, NOW + 3540, None, "expires_in")
        st.next_renewal, st.attempts, st.completed, st.last_success = NOW + 2000, 1, 1, NOW - 60
        st.duration.observe(0.1)
        for ps in st.probes.values():
            ps.attempts, ps.success, ps.status = 10, True, 200
            ps.last_run = ps.last_success = NOW - 5
            ps.duration.observe(0.05)
        states.append(st)
    return states


def series_per_credential(n: int) -> float:
    collector, _ = collector_for(healthy_states(n))
    families = parse_text(collector.render().decode())
    exporter_wide = {f.name for f in FAMILIES if f.subject == "exporter"}
    total = sum(len(f.samples) for f in families if f.name not in exporter_wide)
    return total / n


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 1000])
def test_a_healthy_credential_with_two_probes_exports_at_most_30_series(n: int) -> None:
    per_credential = series_per_credential(n)
    assert per_credential <= 30
    # 12 token and provider series + scope + secret expiry + 2 x 7 probe series.
    assert per_credential == 28


# --------------------------------------------------------------------------- the cache


def fresh_render(states: list[ProviderState], openmetrics: bool) -> bytes:
    collector, _ = collector_for(states)
    return collector.render(openmetrics)


Mutation = Callable[[ProviderState, random.Random], None]


def _mutations() -> list[Mutation]:
    """Single writes, each of one kind, so that every kind must be seen on its own."""

    def on_probe(write: Callable[[ProbeState, random.Random], None]) -> Mutation:
        return lambda st, rng: write(rng.choice(list(st.probes.values())), rng)

    def probe_failure(ps: ProbeState, rng: random.Random) -> None:
        ps.failures[rng.choice(list(ErrorClass))] += 1

    def provider_failure(st: ProviderState, rng: random.Random) -> None:
        st.failures[rng.choice(list(ErrorClass))] += 1

    def probe_attempt(ps: ProbeState, rng: random.Random) -> None:
        ps.attempts += 1

    def probe_consecutive(ps: ProbeState, rng: random.Random) -> None:
        ps.consecutive_failures = rng.randrange(3)

    def probe_result(ps: ProbeState, rng: random.Random) -> None:
        ps.success = rng.random() < 0.5

    def probe_status(ps: ProbeState, rng: random.Random) -> None:
        ps.status = rng.choice([0, 200, 503])

    def probe_error(ps: ProbeState, rng: random.Random) -> None:
        ps.last_error = rng.choice([None, *ErrorClass])

    def probe_success_time(ps: ProbeState, rng: random.Random) -> None:
        ps.last_success = NOW - rng.random()

    def token(st: ProviderState, rng: random.Random) -> None:
        st.token = Token(SecretStr("x"), NOW - 1, NOW + rng.uniform(-50, 4000), None,
                         "expires_in")

    def reject(st: ProviderState, rng: random.Random) -> None:
        st.token_rejected = not st.token_rejected

    def attempt(st: ProviderState, rng: random.Random) -> None:
        st.attempts += 1

    def complete(st: ProviderState, rng: random.Random) -> None:
        st.completed += 1

    def consecutive(st: ProviderState, rng: random.Random) -> None:
        st.consecutive_failures = rng.randrange(3)

    def error(st: ProviderState, rng: random.Random) -> None:
        st.last_error = rng.choice([None, *ErrorClass])

    def renewal(st: ProviderState, rng: random.Random) -> None:
        st.next_renewal = NOW + rng.random()

    def success_time(st: ProviderState, rng: random.Random) -> None:
        st.last_success = NOW - rng.random()

    def lead_field(st: ProviderState, rng: random.Random) -> None:
        # A field added later by someone else still counts as a write.
        st.refused_fresh_token = True  # type: ignore[attr-defined]

    return [
        on_probe(probe_failure), on_probe(probe_attempt), on_probe(probe_consecutive),
        on_probe(probe_result), on_probe(probe_status), on_probe(probe_error),
        on_probe(probe_success_time),
        on_probe(lambda ps, rng: ps.duration.observe(rng.random())),
        provider_failure, token, reject, attempt, complete, consecutive, error, renewal,
        success_time, lead_field, lambda st, rng: st.duration.observe(rng.random()),
    ]


@pytest.mark.slow
def test_the_render_cache_never_serves_stale_text() -> None:
    rng = random.Random(5)
    states = fixed_states() + healthy_states(70)  # more than two blocks
    source = Source(states)
    clock = [NOW]
    collector = TokenHealthCollector(source, clock=lambda: clock[0])
    mutations = _mutations()
    for step in range(300):
        for _ in range(rng.randrange(3)):
            rng.choice(mutations)(rng.choice(states), rng)
        if step % 50 == 49:  # a reload: providers removed and added
            del states[rng.randrange(len(states))]
            states.insert(rng.randrange(len(states)), healthy_states(1)[0])
        clock[0] += rng.choice([0.0, 0.5, 15.0])
        om = step % 2 == 1
        assert collector.render(om) == TokenHealthCollector(
            source, clock=lambda: clock[0]).render(om), f"step {step}"


def test_an_unchanged_provider_is_not_rendered_again() -> None:
    states = healthy_states(3)
    collector, _ = collector_for(states)
    collector.render()
    calls: list[str] = []

    def counting(f: Family[ProviderState]) -> Callable[[ProviderState, float], float | None]:
        read = f.value
        assert read is not None

        def wrapped(st: ProviderState, now: float) -> float | None:
            calls.append(st.provider.name)
            return read(st, now)
        return wrapped

    attempts = next(f for f in FAMILIES if f.name == "oauth_token_refresh_attempts")
    plans = collector._provider_plans
    index = next(k for k, p in enumerate(plans) if collector._plans[p[0]].family is attempts)
    i, _, fmt, static = plans[index]
    plans[index] = (i, counting(attempts), fmt, static)
    collector.render()
    assert calls == []
    states[1].attempts += 1
    out = collector.render()
    assert calls == ["cred-00001"]
    assert b'oauth_token_refresh_attempts_total{provider="cred-00001"} 2.0' in out


def test_render_from_another_thread_while_the_loop_writes() -> None:
    """Writers add failure classes (new dict keys) and replace tokens while a
    thread renders, as the web server does: no error, and the end is exact."""
    states = healthy_states(200)
    collector, _ = collector_for(states)
    errors: list[BaseException] = []
    stop = threading.Event()

    def scrape() -> None:
        try:
            while not stop.is_set():
                collector.render(True)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=scrape)
    thread.start()
    rng = random.Random(3)
    mutations = _mutations()
    try:
        for _ in range(20_000):
            rng.choice(mutations)(rng.choice(states), rng)
    finally:
        stop.set()
        thread.join(30)
    assert not errors
    assert collector.render(True) == fresh_render(states, True)


# --------------------------------------------------------------------------- pieces


def test_value_formatting_is_the_client_librarys() -> None:
    rng = random.Random(9)
    values: list[float | int] = [0, 1, 4095, 4096, 86_400, 10**12, 0.0, -0.0, 1.5, -2.25,
                                 math.inf, -math.inf, math.nan, 1e-7, 1e16, 1e22, 123456.0,
                                 1234567.0, 1_900_000_000.123, 0.1 + 0.2]
    values += [rng.uniform(-1e10, 1e10) for _ in range(2000)]
    values += [rng.uniform(0, 1) for _ in range(500)]
    values += [rng.randrange(10**7) for _ in range(500)]
    values += [10 ** rng.uniform(-12, 20) for _ in range(500)]
    for v in values:
        assert _value(v) == go_float(v), v


def test_failure_classes_appear_in_the_fixed_order_when_they_first_happen() -> None:
    st = fixed_states()[2]
    assert list(st.failures) == []
    assert st.failures[ErrorClass.OTHER] == 0
    assert ErrorClass.OTHER not in st.failures  # reading does not add it
    before = st.failures.snapshot()
    st.failures[ErrorClass.OTHER] += 1
    st.failures[ErrorClass.INVALID_REQUEST] += 1
    st.failures[ErrorClass.OTHER] += 1
    assert before == {}  # a reader's dict is never changed under it
    assert list(st.failures.items()) == [(ErrorClass.INVALID_REQUEST, 1), (ErrorClass.OTHER, 2)]


def test_exposition_adds_process_and_python_collectors() -> None:
    exposition = Exposition(Source(fixed_states()), clock=lambda: NOW)
    for om in (False, True):
        ours = exposition.collector.render(om, eof=False)
        body = exposition.render(om)
        assert body.startswith(ours)
        names = {f.name for f in (parse_openmetrics if om else parse_text)(body.decode())}
        assert {"process_cpu_seconds", "python_info", "python_gc_objects_collected",
                "oauth_token_valid"} <= names, names
        assert body.endswith(b"# EOF\n") == om
        assert body.count(b"# EOF") == int(om)
    assert exposition.registry.get_sample_value("oauth_token_pending",
                                                {"provider": "starting"}) == 1.0
    assert exposition.registry.get_sample_value("process_cpu_seconds_total") is not None


@pytest.mark.slow
def test_keep_rendered_renders_changes_on_the_loop_ahead_of_the_scrape() -> None:
    states = healthy_states(300)  # three blocks
    exposition = Exposition(Source(states), clock=lambda: NOW)
    collector = exposition.collector
    collector.render()
    states[5].probes["head"].attempts += 1
    states[250].failures[ErrorClass.TIMEOUT] += 1

    async def run_a_while() -> None:
        task = asyncio.ensure_future(exposition.keep_rendered(interval=0.01))
        await asyncio.sleep(0.2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_virtual(run_a_while())  # 0.2 s of virtual time: 20 passes, whatever the load
    # The scrape finds nothing left to read for the subjects that changed...
    reads: list[str] = []
    collector._probe_plans = [(i, _counting(read, reads), fmt, static)
                              for i, read, fmt, static in collector._probe_plans]
    collector._provider_plans = [(i, _counting(read, reads), fmt, static)
                                 for i, read, fmt, static in collector._provider_plans]
    out = collector.render()
    assert reads == []
    # ...and serves what they say now.
    assert out == fresh_render(states, False)
    assert b'oauth_probe_attempts_total{probe="head",provider="cred-00005"} 11.0' in out


def test_a_render_pass_is_due_just_before_the_next_expected_scrape() -> None:
    now = [0.0]
    exposition = Exposition(Source(healthy_states(1)), clock=lambda: NOW,
                            monotonic=lambda: now[0])

    def scrape_at(t: float) -> None:
        now[0] = t
        exposition.render()

    def due_at(t: float) -> bool:
        now[0] = t
        return exposition.render_due(2.0)

    assert due_at(0.0)  # nobody has scraped: every pass is due
    scrape_at(100.0)
    assert due_at(101.0)  # one scrape says nothing about the next
    scrape_at(115.0)  # every 15 s
    assert not due_at(116.0)
    assert not due_at(127.9)
    assert due_at(128.0)  # two seconds before the expected scrape at 130
    assert due_at(145.0)  # late (or Prometheus is gone): due until it comes
    scrape_at(130.5)
    assert not due_at(131.0)
    # A second Prometheus (an HA pair) scraping 3 s after the first: the next
    # scrape is expected one shortest gap after the last.
    scrape_at(133.5)
    assert due_at(134.5)
    scrape_at(145.5)
    assert not due_at(146.0)
    assert due_at(146.5)


def test_keep_rendered_passes_only_ahead_of_each_scrape() -> None:
    """At a 15 s scrape interval: a pass every second until two scrapes have
    come, then passes only in the two seconds before each scrape, one of them
    within the last second, so the scrape finds little left to render."""
    states = healthy_states(300)
    passes: list[float] = []
    scrapes: list[float] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        exposition = Exposition(Source(states), clock=lambda: NOW, monotonic=loop.time)
        collector = exposition.collector
        refresh = collector.refresh_block

        def counted(index: int) -> bool:
            if index == 0:
                passes.append(loop.time())
            return refresh(index)

        collector.refresh_block = counted  # type: ignore[method-assign]
        start = loop.time()
        task = asyncio.ensure_future(exposition.keep_rendered(interval=1.0))
        for k in range(1, 11):
            await asyncio.sleep(start + 15.0 * k + 0.5 - loop.time())
            states[k].probes["head"].attempts += 1
            scrapes.append(loop.time())
            exposition.render()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    run_virtual(scenario())
    before_second = [t for t in passes if t < scrapes[1]]
    # Blocks exist from the first scrape on; then, with nothing to go by, every second.
    assert len(before_second) == 15
    later = [t for t in passes if t > scrapes[1]]
    assert 8 * 2 <= len(later) <= 8 * 3, later  # was 8 * 15
    for scrape in scrapes[2:]:
        assert any(scrape - 1.0 <= t < scrape for t in later), (scrape, later)


def _counting(read: Callable[[Any, float], Any], calls: list[str]) -> Callable[[Any, float], Any]:
    def counted(subject: Any, now: float) -> Any:
        calls.append(repr(subject)[:40])
        return read(subject, now)
    return counted


def test_refresh_on_the_loop_gives_way_to_a_scrape_in_progress() -> None:
    states = healthy_states(3)
    collector, _ = collector_for(states)
    collector.render()
    with collector._lock:  # a scrape is rendering in the web thread
        assert collector.refresh_block(0) is False
    assert collector.refresh_block(0) is True
    assert collector.refresh_block(1) is False  # no such block
    states.append(healthy_states(1)[0])
    assert collector.refresh_block(0) is False  # providers changed: the scrape rebuilds


def test_histogram_buckets_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings([])[0].metrics_histogram_buckets is False
    assert load_settings(["--metrics.histogram-buckets"])[0].metrics_histogram_buckets is True
    monkeypatch.setenv("TOKEN_EXPORTER_METRICS_HISTOGRAM_BUCKETS", "true")
    assert load_settings([])[0].metrics_histogram_buckets is True


# --------------------------------------------------------------------------- probe state


def _probe_runner(answers: Iterator[int]) -> tuple[ProviderState, ProbeRunner]:
    config: Config = parse_config(
        "providers:\n  - name: p\n    preset: generic\n    token_url: https://id.test/token\n"
        "    client_id: a\n    client_secret: s\n    probes:\n"
        "      - {name: api, url: 'https://api.test/'}\n", "p.yaml", {})
    state = ProviderState(config.providers[0])
    state.token = Token(SecretStr("tok"), NOW - 10, NOW + 3600, None, "expires_in")
    state.completed = 1

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(next(answers), json={})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    manager = TokenManager(state, client, HostLimiter(), clock=lambda: NOW)
    ps = state.probes["api"]
    return state, ProbeRunner(state, ps, manager, client, clock=lambda: NOW)


def test_probe_consecutive_failures_and_last_error_follow_the_runs() -> None:
    state, runner = _probe_runner(iter([503, 500, 200, 503]))
    ps = state.probes["api"]

    async def run(times: int) -> None:
        for _ in range(times):
            await runner.run()

    asyncio.run(run(2))
    assert (ps.consecutive_failures, ps.last_error) == (2, ErrorClass.SERVER_ERROR)
    assert value([state], "oauth_probe_last_error", provider="p", probe="api",
                 error="server_error") == 1.0
    asyncio.run(run(1))
    assert (ps.consecutive_failures, ps.last_error) == (0, None)
    assert value([state], "oauth_probe_consecutive_failures", provider="p", probe="api") == 0
    assert not [k for k in samples([state]) if k[0] == "oauth_probe_last_error"]
    assert value([state], "oauth_probe_failures_total", provider="p", probe="api",
                 error="server_error") == 2
    asyncio.run(run(1))
    assert ps.consecutive_failures == 1
