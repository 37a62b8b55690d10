"""Every metric family the exporter exports, described once.

``FAMILIES`` is the metrics contract (SPEC.md, Metrics) as data: name, type,
help, labels, and how to read each sample from the state. Both ways of
exporting read it: ``TokenHealthCollector.collect()`` (prometheus-client's
registry, used by tests and by the fallback encoders) and the direct renderer
that serves ``/metrics`` (``exporter.collector``). Adding a family is adding
one entry here; its place in the table is its place in the exposition.

A family belongs to a *subject*: each provider (labels ``provider`` plus its
extra labels), each probe (``provider``, ``probe``, extra labels), or the
exporter itself (only its extra labels). Its samples come from exactly one
reader:

* ``value(subject, now)``: one sample with the subject's labels, or ``None``
  for none (e.g. no token held);
* ``values(subject, now)``: ``(extra label values, value)`` pairs, for families
  with extra labels (``error``, ``scope``...), none when there is nothing to
  say (a failure class that never happened has no series);
* ``histogram(subject)``: a latency histogram, exported as ``_sum``/``_count``
  (a summary without quantiles) unless buckets are enabled.

A family whose value depends on the clock is ``per_scrape``: it is computed at
every scrape; one that depends only on the configuration is ``static``:
computed once; everything else is rendered again only when its subject changed.
Label values come from config names and the fixed error classes only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

from exporter import buildinfo
from exporter.discovery import DISCOVERY_ERROR_CLASSES
from exporter.state import Histogram, ProbeState, ProviderState


class StateSource(Protocol):
    """What the metrics read: provider states and the exporter-wide facts."""

    def provider_states(self) -> Iterable[ProviderState]: ...

    @property
    def config_reload_ok(self) -> bool: ...

    @property
    def config_reload_time(self) -> float: ...


S = TypeVar("S")
Subject = Literal["provider", "probe", "exporter"]
Type = Literal["gauge", "counter", "histogram"]
Number = float | int

#: The labels every sample of a subject carries, before the family's own.
BASE_LABELS: dict[Subject, tuple[str, ...]] = {
    "provider": ("provider",),
    "probe": ("provider", "probe"),
    "exporter": (),
}


@dataclass(frozen=True)
class Family(Generic[S]):
    """One metric family. ``name`` is the family name: counters without ``_total``."""

    name: str
    type: Type
    help: str
    subject: Subject
    extra_labels: tuple[str, ...] = ()
    value: Callable[[S, float], Number | None] | None = None
    values: Callable[[S, float], Iterable[tuple[tuple[str, ...], Number]]] | None = None
    histogram: Callable[[S], Histogram] | None = None
    #: Depends on the clock: computed at every scrape.
    per_scrape: bool = False
    #: Depends only on the configuration: computed once per subject.
    static: bool = False

    def __post_init__(self) -> None:
        readers = [r for r in (self.value, self.values, self.histogram) if r is not None]
        if len(readers) != 1:
            raise ValueError(f"{self.name}: exactly one of value, values, histogram")
        if (self.histogram is not None) != (self.type == "histogram"):
            raise ValueError(f"{self.name}: histograms, and only they, read a Histogram")
        if (self.values is not None) != bool(self.extra_labels):
            raise ValueError(f"{self.name}: extra labels go with values(), and only there")
        if self.per_scrape and (self.static or self.subject != "provider"):
            raise ValueError(f"{self.name}: only provider families may be per_scrape")

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label name, the subject's first."""
        return BASE_LABELS[self.subject] + self.extra_labels


def _provider(name: str, type: Type, help: str, **kw: Any) -> Family[ProviderState]:
    return Family[ProviderState](name, type, help, "provider", **kw)


def _probe(name: str, type: Type, help: str, **kw: Any) -> Family[ProbeState]:
    return Family[ProbeState](name, type, help, "probe", **kw)


def _exporter(name: str, type: Type, help: str, **kw: Any) -> Family[StateSource]:
    return Family[StateSource](name, type, help, "exporter", **kw)


def _flag(b: bool) -> float:
    return 1.0 if b else 0.0


def _expires_at(st: ProviderState, now: float) -> float | None:
    return None if st.token is None else st.token.expires_at


def _expires_in(st: ProviderState, now: float) -> float | None:
    return None if st.token is None else st.token.expires_at - now


def _issued_at(st: ProviderState, now: float) -> float | None:
    return None if st.token is None else st.token.issued_at


def _scopes(st: ProviderState, now: float) -> Iterable[tuple[tuple[str, ...], Number]]:
    # The configured (requested) scopes, never a string the server sent.
    token, requested = st.token, st.provider.scope
    if token is None or not requested:
        return ()
    granted = token.granted_scopes
    return [((s,), _flag(granted is None or s in granted)) for s in requested.split()]


#: A subject whose attempts are counted: a credential's token requests, a probe's runs.
Attempted = ProviderState | ProbeState


def _failures(st: Attempted, now: float) -> Iterable[tuple[tuple[str, ...], Number]]:
    return [((e.value,), n) for e, n in st.failures.snapshot().items()]


def _last_error(st: Attempted, now: float) -> Iterable[tuple[tuple[str, ...], Number]]:
    error = st.last_error
    return () if error is None else (((error.value,), 1.0),)


def _outcomes(subject: Literal["provider", "probe"], prefix: str, *, sent: str, runs: str,
              last_success: tuple[str, str]) -> tuple[Family[Attempted], ...]:
    """The five families that follow a repeated attempt, read the same way for a
    credential's token requests and a probe's runs: requests ``sent``, failed
    ``runs`` by class, failures in a row, the last failure's class, and when it
    last succeeded (``last_success``: name and help, which do not follow ``prefix``)."""
    run = runs.removesuffix("s")
    return (
        Family(prefix + "attempts", "counter", f"{sent} sent.", subject,
               value=lambda st, now: st.attempts),
        Family(prefix + "failures", "counter",
               f"Failed {runs} by error class; a class appears when it first happens.",
               subject, extra_labels=("error",), values=_failures),
        Family(prefix + "consecutive_failures", "gauge",
               f"Failed {runs} since the last success (0 when healthy).", subject,
               value=lambda st, now: st.consecutive_failures),
        Family(prefix + "last_error", "gauge",
               f"1 for the error class of the last failed {run}, while failing.", subject,
               extra_labels=("error",), values=_last_error),
        Family(last_success[0], "gauge", last_success[1], subject,
               value=lambda st, now: st.last_success),
    )


def _discovery_failures(st: ProviderState,
                        now: float) -> Iterable[tuple[tuple[str, ...], Number]]:
    """Failed metadata reads by class, in the fixed class order, classes that happened."""
    counts = st.discovery_failures
    return [((e,), counts[e]) for e in DISCOVERY_ERROR_CLASSES if e in counts]


def _info(st: ProviderState, now: float) -> Iterable[tuple[tuple[str, ...], Number]]:
    p = st.provider
    return (((p.preset.name, p.token_host, p.auth_method), 1.0),)


def _build(source: StateSource, now: float) -> Iterable[tuple[tuple[str, ...], Number]]:
    return ((build_labels(), 1.0),)


#: The contract, in exposition order.
FAMILIES: tuple[Family[Any], ...] = (
    _provider("oauth_token_expiration_timestamp_seconds", "gauge",
              "When the current token expires (absent while none is held).",
              value=_expires_at),
    _provider("oauth_token_expires_in_seconds", "gauge",
              "Seconds left on the current token, computed at scrape time.",
              value=_expires_in, per_scrape=True),
    _provider("oauth_token_issued_timestamp_seconds", "gauge",
              "When the current token was obtained.", value=_issued_at),
    _provider("oauth_token_next_renewal_timestamp_seconds", "gauge",
              "When the next token renewal is scheduled.",
              value=lambda st, now: st.next_renewal),
    _provider("oauth_token_valid", "gauge",
              "1 while an unexpired token not known to be revoked is held.",
              value=lambda st, now: _flag(st.valid_token(now) is not None), per_scrape=True),
    _provider("oauth_token_pending", "gauge",
              "1 until the credential's first token request has completed, then 0.",
              value=lambda st, now: _flag(st.pending)),
    *_outcomes("provider", "oauth_token_refresh_", sent="Token requests",
               runs="token requests", last_success=(
                   "oauth_token_last_refresh_success_timestamp_seconds",
                   "When a token was last obtained.")),
    _provider("oauth_token_refresh_duration_seconds", "histogram", "Token request latency.",
              histogram=lambda st: st.duration),
    _provider("oauth_token_scope_granted", "gauge",
              "1 per requested scope the server granted, 0 per requested scope it did not.",
              extra_labels=("scope",), values=_scopes),
    _provider("oauth_client_secret_expiration_timestamp_seconds", "gauge",
              "When the client secret expires (from client_secret_expires_at).",
              value=lambda st, now: st.provider.client_secret_expires_at, static=True),
    _provider("oauth_client_certificate_expiration_timestamp_seconds", "gauge",
              "When the client certificate (use=tls) or the signing key's certificate "
              "(use=signing) expires.", extra_labels=("use",),
              values=lambda st, now: [((use,), t) for use, t in st.provider.certificates],
              static=True),
    _provider("oauth_discovery_last_success_timestamp_seconds", "gauge",
              "When the issuer's metadata document was last read successfully.",
              value=lambda st, now: st.discovery_last_success),
    _provider("oauth_discovery_failures", "counter",
              "Failed reads of the issuer's metadata document by error class.",
              extra_labels=("error",), values=_discovery_failures),
    _probe("oauth_probe_success", "gauge", "1 if the last probe met its expectation.",
           value=lambda ps, now: _flag(bool(ps.success))),
    _probe("oauth_probe_http_status_code", "gauge",
           "HTTP status of the last probe (0: no response).", value=lambda ps, now: ps.status),
    _probe("oauth_probe_duration_seconds", "histogram", "Probe latency.",
           histogram=lambda ps: ps.duration),
    *_outcomes("probe", "oauth_probe_", sent="Probe requests", runs="probe runs",
               last_success=("oauth_probe_last_success_timestamp_seconds",
                             "When the probe last met its expectation.")),
    _provider("oauth_provider_info", "gauge", "Static facts about each configured provider.",
              extra_labels=("preset", "token_host", "auth_method"), values=_info, static=True),
    _exporter("oauth_exporter_build_info", "gauge",
              "Version, revision and Python version of the exporter; always 1.",
              extra_labels=("version", "revision", "python_version"), values=_build),
    _exporter("oauth_exporter_config_last_reload_successful", "gauge",
              "1 if the last configuration load or reload succeeded.",
              value=lambda src, now: _flag(src.config_reload_ok)),
    _exporter("oauth_exporter_config_last_reload_success_timestamp_seconds", "gauge",
              "When the configuration was last loaded successfully.",
              value=lambda src, now: src.config_reload_time),
    _exporter("oauth_exporter_renewal_stalls", "counter",
              "Times a renewal was found stalled and restarted.",
              value=lambda src, now: getattr(src, "renewal_stalls", 0)),
)


def sample_names(histogram_buckets: bool = False) -> frozenset[str]:
    """Every sample name the exporter's own families can produce, for checking
    alert rules and dashboards against the contract."""
    names: set[str] = set()
    for f in FAMILIES:
        if f.type == "histogram":
            suffixes = ("_count", "_sum", "_bucket") if histogram_buckets else ("_count", "_sum")
            names.update(f.name + s for s in suffixes)
        else:
            names.add(f.name + "_total" if f.type == "counter" else f.name)
    return frozenset(names)


# --------------------------------------------------------------------------- build info


def build_labels() -> tuple[str, str, str]:
    """``oauth_exporter_build_info``'s version, revision and python_version."""
    return buildinfo.version(), buildinfo.revision(), buildinfo.python_version()
