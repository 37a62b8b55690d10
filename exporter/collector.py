"""Turns provider state into metric families at scrape time.

``collect()`` only reads: no I/O, no locks held across providers, no mutation.
Time-dependent values (``oauth_token_expires_in_seconds``, ``oauth_token_valid``)
are computed from the injected clock at the moment of the scrape. Sample::

    oauth_token_expires_in_seconds{provider="simpledocs-prod"} 4187.3
    oauth_token_refresh_failures_total{error="invalid_client",provider="simpledocs-prod"} 0.0
    oauth_probe_success{probe="documents",provider="simpledocs-prod"} 1.0

Label values come from config names and the fixed error classes only; the
scope label is the configured (requested) scope, never a string the server
sent, so a server cannot create series.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.errors import ALL_ERROR_CLASSES
from exporter.state import Histogram, ProviderState


class StateSource(Protocol):
    """What the collector reads: provider states and the reload outcome."""

    def provider_states(self) -> Iterable[ProviderState]: ...

    @property
    def config_reload_ok(self) -> bool: ...

    @property
    def config_reload_time(self) -> float: ...


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    return [(le, float(n)) for le, n in h.cumulative()]


class TokenHealthCollector(Collector):
    def __init__(self, source: StateSource, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        # Declaring no descriptions keeps registration from calling collect().
        return iter(())

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        states = list(self._source.provider_states())
        p = ["provider"]
        expiration = GaugeMetricFamily(
            "oauth_token_expiration_timestamp_seconds",
            "When the current token expires (absent while none is held).", labels=p)
        expires_in = GaugeMetricFamily(
            "oauth_token_expires_in_seconds",
            "Seconds left on the current token, computed at scrape time.", labels=p)
        issued = GaugeMetricFamily(
            "oauth_token_issued_timestamp_seconds",
            "When the current token was obtained.", labels=p)
        next_renewal = GaugeMetricFamily(
            "oauth_token_next_renewal_timestamp_seconds",
            "When the next token renewal is scheduled.", labels=p)
        valid = GaugeMetricFamily(
            "oauth_token_valid",
            "1 while an unexpired token not known to be revoked is held.", labels=p)
        attempts = CounterMetricFamily(
            "oauth_token_refresh_attempts", "Token requests sent.", labels=p)
        failures = CounterMetricFamily(
            "oauth_token_refresh_failures", "Failed token requests by error class.",
            labels=["provider", "error"])
        last_success = GaugeMetricFamily(
            "oauth_token_last_refresh_success_timestamp_seconds",
            "When a token was last obtained.", labels=p)
        duration = HistogramMetricFamily(
            "oauth_token_refresh_duration_seconds", "Token request latency.", labels=p)
        scope = GaugeMetricFamily(
            "oauth_token_scope_granted",
            "1 per requested scope the server granted, 0 per requested scope it did not.",
            labels=["provider", "scope"])
        secret_exp = GaugeMetricFamily(
            "oauth_client_secret_expiration_timestamp_seconds",
            "When the client secret expires (from client_secret_expires_at).", labels=p)
        pl = ["provider", "probe"]
        probe_success = GaugeMetricFamily(
            "oauth_probe_success", "1 if the last probe met its expectation.", labels=pl)
        probe_status = GaugeMetricFamily(
            "oauth_probe_http_status_code",
            "HTTP status of the last probe (0: no response).", labels=pl)
        probe_duration = HistogramMetricFamily(
            "oauth_probe_duration_seconds", "Probe latency.", labels=pl)
        probe_attempts = CounterMetricFamily(
            "oauth_probe_attempts", "Probe requests sent.", labels=pl)
        probe_failures = CounterMetricFamily(
            "oauth_probe_failures", "Failed probes by error class.",
            labels=["provider", "probe", "error"])
        probe_last_success = GaugeMetricFamily(
            "oauth_probe_last_success_timestamp_seconds",
            "When the probe last met its expectation.", labels=pl)
        info = GaugeMetricFamily(
            "oauth_provider_info", "Static facts about each configured provider.",
            labels=["provider", "preset", "token_host", "auth_method"])

        for st in states:
            prov = st.provider
            name = prov.name
            labels = [name]
            token = st.token
            if token is not None:
                expiration.add_metric(labels, token.expires_at)
                expires_in.add_metric(labels, token.expires_at - now)
                issued.add_metric(labels, token.issued_at)
                if prov.scope:
                    granted = token.granted_scopes
                    for s in prov.scope.split():
                        ok = granted is None or s in granted
                        scope.add_metric([name, s], 1.0 if ok else 0.0)
            if st.next_renewal is not None:
                next_renewal.add_metric(labels, st.next_renewal)
            valid.add_metric(labels, 1.0 if st.valid_token(now) is not None else 0.0)
            attempts.add_metric(labels, st.attempts)
            for err in ALL_ERROR_CLASSES:
                failures.add_metric([name, err.value], st.failures[err])
            if st.last_success is not None:
                last_success.add_metric(labels, st.last_success)
            duration.add_metric(labels, _buckets(st.duration), st.duration.sum)
            if prov.client_secret_expires_at is not None:
                secret_exp.add_metric(labels, prov.client_secret_expires_at)
            info.add_metric([name, prov.preset.name, prov.token_host, prov.auth_method], 1.0)
            for ps in st.probes.values():
                pls = [name, ps.probe.name]
                probe_success.add_metric(pls, 1.0 if ps.success else 0.0)
                probe_status.add_metric(pls, ps.status)
                probe_duration.add_metric(pls, _buckets(ps.duration), ps.duration.sum)
                probe_attempts.add_metric(pls, ps.attempts)
                for err in ALL_ERROR_CLASSES:
                    probe_failures.add_metric([*pls, err.value], ps.failures[err])
                if ps.last_success is not None:
                    probe_last_success.add_metric(pls, ps.last_success)

        yield from (
            expiration, expires_in, issued, next_renewal, valid, attempts, failures,
            last_success, duration, scope, secret_exp, probe_success, probe_status,
            probe_duration, probe_attempts, probe_failures, probe_last_success, info,
        )
        build = GaugeMetricFamily(
            "oauth_exporter_build_info", "Version of the exporter; always 1.",
            labels=["version", "python_version"])
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build
        yield GaugeMetricFamily(
            "oauth_exporter_config_last_reload_successful",
            "1 if the last configuration load or reload succeeded.",
            value=1.0 if self._source.config_reload_ok else 0.0)
        yield GaugeMetricFamily(
            "oauth_exporter_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            value=self._source.config_reload_time)
