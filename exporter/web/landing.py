"""The landing page (``/``): what needs attention first, from ``templates/landing.html``.

A one-line summary ("3 of 52 credentials need attention"), then one row per
credential, failing rows first, then those still waiting for their first
token, then the healthy ones, each group by name. A probe that did not run
says why instead of showing a status it never received, and every error class
links to the runbook section for it (``docs/runbooks.md``).

Only config names, the fixed error classes and numbers reach the page (no
secret, token or server text), and the template escapes everything it prints.

State fields that newer schedulers may add are read with ``getattr`` so the
page works with and without them: ``ProviderState.pending`` (default: no token
request has come back yet), ``ProviderState.refused_fresh`` (the API refused a
freshly obtained token too) and ``ProbeState.skip_reason`` (why a run sent
nothing, in words or as an error class; default: ``no_token`` with no HTTP
status means skipped for want of a token).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache

import jinja2

from exporter import __version__
from exporter.errors import ErrorClass
from exporter.state import ProbeState, ProviderState

#: Where docs/runbooks.md is published; alert rules link to the same page.
RUNBOOK_URL = (
    "https://github.com/token-health-exporter/token-health-exporter/blob/main/docs/runbooks.md"
)

#: The client secret counts as needing attention this many days before it expires
#: (TokenHealthClientSecretExpiresVerySoon's threshold).
SECRET_ATTENTION_DAYS = 14
SECRET_WARNING_DAYS = 28

E = ErrorClass
#: The runbook section (its heading's anchor) for a token request's error class.
TOKEN_RUNBOOK: dict[ErrorClass, str] = {
    **dict.fromkeys(
        (E.INVALID_CLIENT, E.UNAUTHORIZED_CLIENT, E.INVALID_GRANT),
        "tokenhealthcredentialsrejected"),
    E.INVALID_SCOPE: "tokenhealthscoperejected",
    E.INSUFFICIENT_SCOPE: "tokenhealthscoperejected",
    E.RATE_LIMITED: "tokenhealthtokenendpointratelimited",
    E.TOKEN_REVOKED: "tokenhealthtokenrevoked",
    E.NO_TOKEN: "tokenhealthnovalidtoken",
}
TOKEN_RUNBOOK_DEFAULT = "tokenhealthrenewalfailing"
#: The runbook section for a probe's error class.
PROBE_RUNBOOK: dict[ErrorClass, str] = {
    E.NO_TOKEN: "tokenhealthnovalidtoken",
    E.INSUFFICIENT_SCOPE: "tokenhealthscoperejected",
    E.INVALID_SCOPE: "tokenhealthscoperejected",
    E.TOKEN_REVOKED: "tokenhealthtokenrevoked",
}
PROBE_RUNBOOK_DEFAULT = "tokenhealthprobefailing"
#: A row whose token is not valid although no request failed (it lapsed, or the API refused it).
NO_VALID_TOKEN_RUNBOOK = "tokenhealthnovalidtoken"

#: Why a probe run was skipped, in words, when only an error class says why.
_SKIP_WORDS = {
    E.NO_TOKEN.value: "no valid token",
}
#: Probe error classes that mean no HTTP answer came back.
_NO_ANSWER = frozenset({E.TIMEOUT, E.CONNECTION_ERROR, E.TLS_ERROR, E.OTHER})


def runbook_link(anchor: str) -> str:
    return f"{RUNBOOK_URL}#{anchor}"


def _class_value(error: object) -> str:
    return error.value if isinstance(error, ErrorClass) else str(error)


def _as_class(error: object) -> ErrorClass | None:
    try:
        return ErrorClass(_class_value(error))
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    stamp = datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S UTC")
    return f"{stamp} (in {_duration(ts - now)})"


@dataclass(frozen=True)
class ProbeRow:
    name: str
    #: ok, failing, skipped, not run yet
    result: str
    #: What happened, in words: "HTTP 200", "no answer", why it was skipped, ...
    detail: str
    error: str | None
    runbook: str | None


@dataclass(frozen=True)
class Row:
    name: str
    preset: str
    token_host: str
    #: valid, pending, none, expired, rejected
    token: str
    time_left: str
    next_renewal: str
    last_error: str | None
    runbook: str | None
    secret: str
    secret_css: str
    probes: tuple[ProbeRow, ...]
    attention: bool
    pending: bool
    #: Sentences that explain the row's state (e.g. fresh tokens refused).
    notes: tuple[str, ...] = field(default=())


def _probe_row(ps: ProbeState) -> ProbeRow:
    error = ps.last_error
    klass = _as_class(error) if error is not None else None
    skip = getattr(ps, "skip_reason", None)
    if skip is None and ps.status == 0 and klass is ErrorClass.NO_TOKEN:
        skip = ErrorClass.NO_TOKEN.value
    if ps.success is None and ps.last_run is None and skip is None:
        return ProbeRow(ps.probe.name, "not run yet", "", None, None)
    if skip is not None:
        text = _class_value(skip)
        if _as_class(text) is not None:  # a bare class: say it in words
            text = _SKIP_WORDS.get(text, text.replace("_", " "))
        anchor = PROBE_RUNBOOK.get(klass, PROBE_RUNBOOK_DEFAULT) if klass else (
            PROBE_RUNBOOK[E.NO_TOKEN])
        return ProbeRow(ps.probe.name, "skipped", text, None, runbook_link(anchor))
    if ps.status:
        detail = f"HTTP {ps.status}"
    elif klass in _NO_ANSWER:
        detail = "no answer"
    else:
        detail = "no HTTP status"
    if ps.success:
        return ProbeRow(ps.probe.name, "ok", detail, None, None)
    anchor = PROBE_RUNBOOK.get(klass, PROBE_RUNBOOK_DEFAULT) if klass else PROBE_RUNBOOK_DEFAULT
    return ProbeRow(ps.probe.name, "failing", detail,
                    _class_value(error) if error is not None else None, runbook_link(anchor))


def _row(st: ProviderState, now: float) -> Row:
    prov = st.provider
    token = st.token
    pending = getattr(st, "pending", None)
    if pending is None:
        pending = not st.attempted
    if token is None:
        state, left = ("pending" if pending else "none"), "-"
    elif st.valid_token(now) is not None:
        state, left = "valid", _duration(token.expires_at - now)
    elif st.token_rejected:
        state, left = "rejected", _duration(token.expires_at - now)
    else:
        state, left = "expired", "-"

    probes = tuple(_probe_row(ps) for ps in st.probes.values())
    notes: list[str] = []
    if getattr(st, "refused_fresh", False):
        notes.append("The API refuses freshly obtained tokens too: no probe asks for another "
                     "token before the next scheduled renewal.")

    secret, secret_css, secret_due = "-", "", False
    if prov.client_secret_expires_at is not None:
        days = (prov.client_secret_expires_at - now) / 86400
        secret_due = days < SECRET_ATTENTION_DAYS
        secret_css = "bad" if secret_due else ("soon" if days < SECRET_WARNING_DAYS else "")
        secret = f"{days:.0f} days"
        if secret_due:
            notes.append("The client secret expires in under "
                         f"{SECRET_ATTENTION_DAYS} days." if days > 0
                         else "The client secret has expired.")

    error = st.last_error
    klass = _as_class(error) if error is not None else None
    runbook: str | None = None
    if klass is not None:
        runbook = runbook_link(TOKEN_RUNBOOK.get(klass, TOKEN_RUNBOOK_DEFAULT))
    elif state in ("none", "expired", "rejected"):
        runbook = runbook_link(NO_VALID_TOKEN_RUNBOOK)
    attention = (
        state in ("none", "expired", "rejected")
        or st.consecutive_failures > 0
        or any(p.result == "failing" for p in probes)
        or secret_due
        or bool(notes)
    )
    return Row(
        name=prov.name, preset=prov.preset.name, token_host=prov.token_host,
        token=state, time_left=left, next_renewal=_when(st.next_renewal, now),
        last_error=_class_value(error) if error is not None else None, runbook=runbook,
        secret=secret, secret_css=secret_css, probes=probes,
        attention=attention, pending=bool(pending) and not attention, notes=tuple(notes),
    )


def summary_line(rows: Iterable[Row]) -> str:
    rows = list(rows)
    total = len(rows)
    if total == 0:
        return "No credentials configured."
    attention = sum(r.attention for r in rows)
    pending = sum(r.pending for r in rows)
    noun = "credential" if total == 1 else "credentials"
    verb = "needs" if attention == 1 else "need"
    line = f"{attention} of {total} {noun} {verb} attention"
    if pending:
        line += f"; {pending} waiting for a first token"
    return line + "."


def build_rows(states: Iterable[ProviderState], now: float) -> list[Row]:
    """Rows in page order: needing attention, then pending, then healthy; by name within."""
    rows = [_row(st, now) for st in states]
    rows.sort(key=lambda r: (0 if r.attention else 1 if r.pending else 2, r.name))
    return rows


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("exporter.web", "templates"),
        # Every value is escaped unless marked safe; none is.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("landing.html")


def render_landing_page(states: Iterable[ProviderState], now: float,
                        telemetry_path: str = "/metrics") -> bytes:
    rows = build_rows(states, now)
    return _template().render(
        summary=summary_line(rows), rows=rows, version=__version__,
        telemetry_path=telemetry_path,
    ).encode("utf-8")
