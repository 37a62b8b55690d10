"""Turns provider state into metric families at scrape time.

``collect()`` only reads: no I/O, no locks held across providers, no mutation.
``render()`` writes what ``collect()`` yields straight to exposition text, the
same bytes prometheus-client's encoders would make of it, at a tenth of the cost.
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
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from exporter import __version__
from exporter.discovery import DISCOVERY_ERROR_CLASSES
from exporter.errors import ALL_ERROR_CLASSES, ErrorClass
from exporter.state import Histogram, ProviderState


class StateSource(Protocol):
    """What the collector reads: provider states and the reload outcome."""

    def provider_states(self) -> Iterable[ProviderState]: ...

    @property
    def config_reload_ok(self) -> bool: ...

    @property
    def config_reload_time(self) -> float: ...


#: Error classes with their label values, in the fixed order they are exported.
_ERROR_LABELS: tuple[tuple[ErrorClass, str], ...] = tuple((e, e.value) for e in ALL_ERROR_CLASSES)
#: ``le`` label values per bucket-bound tuple, formatted once rather than per scrape.
_LE_CACHE: dict[tuple[float, ...], tuple[str, ...]] = {}


def _le_values(bounds: tuple[float, ...]) -> tuple[str, ...]:
    les = _LE_CACHE.get(bounds)
    if les is None:
        les = _LE_CACHE[bounds] = (*(f"{b:g}" for b in bounds), "+Inf")
    return les


@dataclass(frozen=True)
class _Family:
    """One exported metric family: what both ``collect()`` and ``render()`` emit."""

    name: str  # counters without their _total suffix, as prometheus-client holds them
    type: str
    doc: str
    labels: tuple[str, ...]

    def new(self) -> Metric:
        if self.type == "counter":
            return CounterMetricFamily(self.name, self.doc, labels=list(self.labels))
        if self.type == "histogram":
            return HistogramMetricFamily(self.name, self.doc, labels=list(self.labels))
        return GaugeMetricFamily(self.name, self.doc, labels=list(self.labels))

    def header(self, openmetrics: bool) -> str:
        """The HELP and TYPE lines prometheus-client writes for this family."""
        if openmetrics:
            doc = self.doc.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
            return f"# HELP {self.name} {doc}\n# TYPE {self.name} {self.type}\n"
        name = self.name + "_total" if self.type == "counter" else self.name
        doc = self.doc.replace("\\", r"\\").replace("\n", r"\n")
        return f"# HELP {name} {doc}\n# TYPE {name} {self.type}\n"


_P = ("provider",)
_PP = ("provider", "probe")
#: Every family, in the order they are exported.
_EXPIRATION = _Family("oauth_token_expiration_timestamp_seconds", "gauge",
                      "When the current token expires (absent while none is held).", _P)
_EXPIRES_IN = _Family("oauth_token_expires_in_seconds", "gauge",
                      "Seconds left on the current token, computed at scrape time.", _P)
_ISSUED = _Family("oauth_token_issued_timestamp_seconds", "gauge",
                  "When the current token was obtained.", _P)
_NEXT_RENEWAL = _Family("oauth_token_next_renewal_timestamp_seconds", "gauge",
                        "When the next token renewal is scheduled.", _P)
_VALID = _Family("oauth_token_valid", "gauge",
                 "1 while an unexpired token not known to be revoked is held.", _P)
_ATTEMPTS = _Family("oauth_token_refresh_attempts", "counter", "Token requests sent.", _P)
_FAILURES = _Family("oauth_token_refresh_failures", "counter",
                    "Failed token requests by error class.", ("provider", "error"))
_LAST_SUCCESS = _Family("oauth_token_last_refresh_success_timestamp_seconds", "gauge",
                        "When a token was last obtained.", _P)
_DURATION = _Family("oauth_token_refresh_duration_seconds", "histogram",
                    "Token request latency.", _P)
_SCOPE = _Family("oauth_token_scope_granted", "gauge",
                 "1 per requested scope the server granted, 0 per requested scope it did not.",
                 ("provider", "scope"))
_SECRET_EXP = _Family("oauth_client_secret_expiration_timestamp_seconds", "gauge",
                      "When the client secret expires (from client_secret_expires_at).", _P)
_CERT_EXP = _Family("oauth_client_certificate_expiration_timestamp_seconds", "gauge",
                    "When the client certificate (use=tls) or the signing key's certificate "
                    "(use=signing) expires.", ("provider", "use"))
_DISCOVERY_SUCCESS = _Family("oauth_discovery_last_success_timestamp_seconds", "gauge",
                             "When the issuer's metadata document was last read successfully.",
                             _P)
_DISCOVERY_FAILURES = _Family("oauth_discovery_failures", "counter",
                              "Failed reads of the issuer's metadata document by error class.",
                              ("provider", "error"))
_PROBE_SUCCESS = _Family("oauth_probe_success", "gauge",
                         "1 if the last probe met its expectation.", _PP)
_PROBE_STATUS = _Family("oauth_probe_http_status_code", "gauge",
                        "HTTP status of the last probe (0: no response).", _PP)
_PROBE_DURATION = _Family("oauth_probe_duration_seconds", "histogram", "Probe latency.", _PP)
_PROBE_ATTEMPTS = _Family("oauth_probe_attempts", "counter", "Probe requests sent.", _PP)
_PROBE_FAILURES = _Family("oauth_probe_failures", "counter", "Failed probes by error class.",
                          ("provider", "probe", "error"))
_PROBE_LAST_SUCCESS = _Family("oauth_probe_last_success_timestamp_seconds", "gauge",
                              "When the probe last met its expectation.", _PP)
_INFO = _Family("oauth_provider_info", "gauge", "Static facts about each configured provider.",
                ("provider", "preset", "token_host", "auth_method"))
_BUILD = _Family("oauth_exporter_build_info", "gauge", "Version of the exporter; always 1.",
                 ("version", "python_version"))
_RELOAD_OK = _Family("oauth_exporter_config_last_reload_successful", "gauge",
                     "1 if the last configuration load or reload succeeded.", ())
_RELOAD_TIME = _Family("oauth_exporter_config_last_reload_success_timestamp_seconds", "gauge",
                       "When the configuration was last loaded successfully.", ())
_PER_PROVIDER = (
    _EXPIRATION, _EXPIRES_IN, _ISSUED, _NEXT_RENEWAL, _VALID, _ATTEMPTS, _FAILURES,
    _LAST_SUCCESS, _DURATION, _SCOPE, _SECRET_EXP, _CERT_EXP, _DISCOVERY_SUCCESS,
    _DISCOVERY_FAILURES, _PROBE_SUCCESS, _PROBE_STATUS, _PROBE_DURATION, _PROBE_ATTEMPTS,
    _PROBE_FAILURES, _PROBE_LAST_SUCCESS, _INFO,
)


def _discovery_counts(st: ProviderState) -> list[tuple[str, int]]:
    """Failed metadata reads by class, in the fixed class order, classes that happened."""
    counts = st.discovery_failures
    if not counts:
        return []
    return [(label, counts[label]) for label in DISCOVERY_ERROR_CLASSES if label in counts]


def _add_histogram(samples: list[Sample], name: str, labels: dict[str, str],
                   h: Histogram) -> None:
    """What ``HistogramMetricFamily.add_metric`` adds: cumulative buckets, count, sum."""
    bucket = name + "_bucket"
    total = 0
    for le, n in zip(_le_values(h.bounds), h.counts, strict=True):
        total += n
        samples.append(Sample(bucket, {**labels, "le": le}, float(total)))
    samples.append(Sample(name + "_count", dict(labels), float(total)))
    samples.append(Sample(name + "_sum", dict(labels), h.sum))


def _label(value: str) -> str:
    """A label value escaped as prometheus-client escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


#: prometheus-client's value formatting (Go's float formatting), typed.
_float_str: Callable[[float], str] = floatToGoString

#: floatToGoString() of small whole numbers, made once.
_SMALL_COUNTS: tuple[str, ...] = tuple(_float_str(float(i)) for i in range(4096))


def _value(v: float) -> str:
    """``floatToGoString(v)``, with a table for the small whole numbers counters hold."""
    if v.__class__ is int and 0 <= v < 4096:
        return _SMALL_COUNTS[v]
    return _float_str(v)


#: render() turns the lines of this many providers into bytes at a time: a few
#: thousand short strings live at once rather than one per series, so the
#: allocator reuses their memory instead of keeping ~50 MB of it after a scrape
#: at 5,000 credentials.
_FLUSH_EVERY = 64


def _render_histogram(out: list[str], name: str, labels: str, h: Histogram) -> None:
    total = 0
    for le, n in zip(_le_values(h.bounds), h.counts, strict=True):
        total += n
        out.append(f'{name}_bucket{{le="{le}",{labels}}} {_value(total)}\n')
    out.append(f"{name}_count{{{labels}}} {_value(total)}\n")
    out.append(f"{name}_sum{{{labels}}} {_float_str(h.sum)}\n")


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
        (expiration, expires_in, issued, next_renewal, valid, attempts, failures, last_success,
         duration, scope, secret_exp, cert_exp, discovery_success, discovery_failures,
         probe_success, probe_status, probe_duration, probe_attempts, probe_failures,
         probe_last_success, info,
         ) = families = [f.new() for f in _PER_PROVIDER]

        # Samples are appended directly, exactly as add_metric() would build them
        # (same names, label dicts, values and order), because add_metric() pays
        # for dict(zip(...)) per sample and list building per histogram: at
        # thousands of credentials that was a third of the /metrics render time
        # (benchmarks/README.md, render).
        exp_s, left_s, issued_s = expiration.samples, expires_in.samples, issued.samples
        renewal_s, valid_s, attempts_s = next_renewal.samples, valid.samples, attempts.samples
        failures_s, last_s, duration_s = failures.samples, last_success.samples, duration.samples
        scope_s, secret_s, info_s = scope.samples, secret_exp.samples, info.samples
        p_success_s, p_status_s = probe_success.samples, probe_status.samples
        p_duration_s, p_attempts_s = probe_duration.samples, probe_attempts.samples
        p_failures_s, p_last_s = probe_failures.samples, probe_last_success.samples
        attempts_name = attempts.name + "_total"
        failures_name = failures.name + "_total"
        p_attempts_name = probe_attempts.name + "_total"
        p_failures_name = probe_failures.name + "_total"
        for st in states:
            prov = st.provider
            name = prov.name
            token = st.token
            if token is not None:
                exp_s.append(Sample(expiration.name, {"provider": name}, token.expires_at))
                left_s.append(Sample(expires_in.name, {"provider": name},
                                     token.expires_at - now))
                issued_s.append(Sample(issued.name, {"provider": name}, token.issued_at))
                if prov.scope:
                    granted = token.granted_scopes
                    for s in prov.scope.split():
                        ok = granted is None or s in granted
                        scope_s.append(Sample(scope.name, {"provider": name, "scope": s},
                                              1.0 if ok else 0.0))
            if st.next_renewal is not None:
                renewal_s.append(Sample(next_renewal.name, {"provider": name}, st.next_renewal))
            valid_s.append(Sample(valid.name, {"provider": name},
                                  1.0 if st.valid_token(now) is not None else 0.0))
            attempts_s.append(Sample(attempts_name, {"provider": name}, st.attempts))
            counts = st.failures
            for err, err_label in _ERROR_LABELS:
                failures_s.append(Sample(failures_name, {"provider": name, "error": err_label},
                                         counts[err]))
            if st.last_success is not None:
                last_s.append(Sample(last_success.name, {"provider": name}, st.last_success))
            _add_histogram(duration_s, duration.name, {"provider": name}, st.duration)
            if prov.client_secret_expires_at is not None:
                secret_s.append(Sample(secret_exp.name, {"provider": name},
                                       prov.client_secret_expires_at))
            for use, not_after in prov.certificates:
                cert_exp.samples.append(Sample(cert_exp.name, {"provider": name, "use": use},
                                               not_after))
            if st.discovery_last_success is not None:
                discovery_success.samples.append(Sample(
                    discovery_success.name, {"provider": name}, st.discovery_last_success))
            for err_label, n in _discovery_counts(st):
                discovery_failures.samples.append(Sample(
                    discovery_failures.name + "_total", {"provider": name, "error": err_label},
                    n))
            info_s.append(Sample(info.name, {
                "provider": name, "preset": prov.preset.name, "token_host": prov.token_host,
                "auth_method": prov.auth_method}, 1.0))
            for ps in st.probes.values():
                probe = ps.probe.name
                p_success_s.append(Sample(probe_success.name,
                                          {"provider": name, "probe": probe},
                                          1.0 if ps.success else 0.0))
                p_status_s.append(Sample(probe_status.name, {"provider": name, "probe": probe},
                                         ps.status))
                _add_histogram(p_duration_s, probe_duration.name,
                               {"provider": name, "probe": probe}, ps.duration)
                p_attempts_s.append(Sample(p_attempts_name, {"provider": name, "probe": probe},
                                           ps.attempts))
                counts = ps.failures
                for err, err_label in _ERROR_LABELS:
                    p_failures_s.append(Sample(
                        p_failures_name, {"provider": name, "probe": probe, "error": err_label},
                        counts[err]))
                if ps.last_success is not None:
                    p_last_s.append(Sample(probe_last_success.name,
                                           {"provider": name, "probe": probe}, ps.last_success))

        yield from families
        build = _BUILD.new()
        assert isinstance(build, GaugeMetricFamily)
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build
        yield GaugeMetricFamily(_RELOAD_OK.name, _RELOAD_OK.doc,
                                value=1.0 if self._source.config_reload_ok else 0.0)
        yield GaugeMetricFamily(_RELOAD_TIME.name, _RELOAD_TIME.doc,
                                value=self._source.config_reload_time)

    def render(self, openmetrics: bool = False) -> bytes:
        """``collect()`` as exposition text, written directly.

        Byte for byte what prometheus-client's ``generate_latest`` (or, with
        ``openmetrics``, ``openmetrics.exposition.generate_latest``) returns for
        a registry holding only this collector, with the default name escaping
        (``benchmarks/render.py`` checks this on every run). It exists because
        those encoders format each sample generically (sorting, escaping and
        validating every label of every sample) and ``collect()`` first builds
        a Sample and a dict per sample: at 1,000 credentials (110,000 series)
        that took over half a second and enough short-lived objects to set off
        full garbage collections that stall the event loop. Here each label
        string is escaped once per credential or probe and every line is one
        f-string; only strings are allocated, and turned into bytes as it goes.
        """
        now = self._clock()
        states = list(self._source.provider_states())
        (exp_o, left_o, issued_o, renewal_o, valid_o, attempts_o, failures_o, last_o,
         duration_o, scope_o, secret_o, cert_o, disc_ok_o, disc_fail_o, p_success_o, p_status_o,
         p_duration_o, p_attempts_o, p_failures_o, p_last_o, info_o) = outs = [
            [f.header(openmetrics)] for f in _PER_PROVIDER]
        failure_labels = [(err, f'error="{label}",') for err, label in _ERROR_LABELS]
        encoded = [bytearray() for _ in outs]

        def flush() -> None:
            for buf, lines in zip(encoded, outs, strict=True):
                buf += "".join(lines).encode("utf-8")
                lines.clear()

        for i, st in enumerate(states):
            if i % _FLUSH_EVERY == _FLUSH_EVERY - 1:
                flush()
            prov = st.provider
            name = _label(prov.name)
            pl = f'provider="{name}"'
            token = st.token
            if token is not None:
                exp_o.append(f"{_EXPIRATION.name}{{{pl}}} {_float_str(token.expires_at)}\n")
                left_o.append(f"{_EXPIRES_IN.name}{{{pl}}} "
                              f"{_float_str(token.expires_at - now)}\n")
                issued_o.append(f"{_ISSUED.name}{{{pl}}} {_float_str(token.issued_at)}\n")
                if prov.scope:
                    granted = token.granted_scopes
                    for s in prov.scope.split():
                        ok = granted is None or s in granted
                        scope_o.append(f'{_SCOPE.name}{{{pl},scope="{_label(s)}"}} '
                                       f"{'1.0' if ok else '0.0'}\n")
            if st.next_renewal is not None:
                renewal_o.append(f"{_NEXT_RENEWAL.name}{{{pl}}} "
                                 f"{_float_str(st.next_renewal)}\n")
            valid_o.append(f"{_VALID.name}{{{pl}}} "
                           f"{'0.0' if st.valid_token(now) is None else '1.0'}\n")
            attempts_o.append(f"{_ATTEMPTS.name}_total{{{pl}}} {_value(st.attempts)}\n")
            counts = st.failures
            for err, el in failure_labels:
                failures_o.append(f"{_FAILURES.name}_total{{{el}{pl}}} {_value(counts[err])}\n")
            if st.last_success is not None:
                last_o.append(f"{_LAST_SUCCESS.name}{{{pl}}} "
                              f"{_float_str(st.last_success)}\n")
            _render_histogram(duration_o, _DURATION.name, pl, st.duration)
            if prov.client_secret_expires_at is not None:
                secret_o.append(f"{_SECRET_EXP.name}{{{pl}}} "
                                f"{_float_str(prov.client_secret_expires_at)}\n")
            for use, not_after in prov.certificates:
                cert_o.append(f'{_CERT_EXP.name}{{{pl},use="{_label(use)}"}} '
                              f"{_float_str(not_after)}\n")
            if st.discovery_last_success is not None:
                disc_ok_o.append(f"{_DISCOVERY_SUCCESS.name}{{{pl}}} "
                                 f"{_float_str(st.discovery_last_success)}\n")
            for err_label, n in _discovery_counts(st):
                disc_fail_o.append(f'{_DISCOVERY_FAILURES.name}_total{{error="{err_label}",{pl}}} '
                                   f"{_value(n)}\n")
            info_o.append(f'{_INFO.name}{{auth_method="{_label(prov.auth_method)}",'
                          f'preset="{_label(prov.preset.name)}",{pl},'
                          f'token_host="{_label(prov.token_host)}"}} 1.0\n')
            for ps in st.probes.values():
                ppl = f'probe="{_label(ps.probe.name)}",{pl}'
                p_success_o.append(f"{_PROBE_SUCCESS.name}{{{ppl}}} "
                                   f"{'1.0' if ps.success else '0.0'}\n")
                p_status_o.append(f"{_PROBE_STATUS.name}{{{ppl}}} {_value(ps.status)}\n")
                _render_histogram(p_duration_o, _PROBE_DURATION.name, ppl, ps.duration)
                p_attempts_o.append(f"{_PROBE_ATTEMPTS.name}_total{{{ppl}}} "
                                    f"{_value(ps.attempts)}\n")
                counts = ps.failures
                for err, el in failure_labels:
                    p_failures_o.append(f"{_PROBE_FAILURES.name}_total{{{el}{ppl}}} "
                                        f"{_value(counts[err])}\n")
                if ps.last_success is not None:
                    p_last_o.append(f"{_PROBE_LAST_SUCCESS.name}{{{ppl}}} "
                                    f"{_float_str(ps.last_success)}\n")

        tail = [
            _BUILD.header(openmetrics),
            f'{_BUILD.name}{{python_version="{_label(platform.python_version())}",'
            f'version="{_label(__version__)}"}} 1.0\n',
            _RELOAD_OK.header(openmetrics),
            f"{_RELOAD_OK.name} {'1.0' if self._source.config_reload_ok else '0.0'}\n",
            _RELOAD_TIME.header(openmetrics),
            f"{_RELOAD_TIME.name} {_float_str(self._source.config_reload_time)}\n",
        ]
        if openmetrics:
            tail.append("# EOF\n")
        flush()
        return b"".join((*encoded, "".join(tail).encode("utf-8")))
