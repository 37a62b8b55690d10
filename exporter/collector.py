"""Turning provider state into the ``/metrics`` exposition, from one family table.

Two ways, both driven by ``exporter.metrics.FAMILIES``:

* ``TokenHealthCollector.collect()`` yields prometheus-client metric families
  (the registry path: ``registry.get_sample_value`` in tests, and the encoders
  for the rare ``escaping=dots`` scrape);
* ``TokenHealthCollector.render()`` writes the same exposition directly, byte
  for byte what prometheus-client's text (0.0.4) or OpenMetrics encoder makes
  of ``collect()``, and is what ``/metrics`` serves.

What makes the direct renderer cheap at thousands of credentials: it keeps,
per provider and per probe, what it last read for each family and the text it
made of it. A subject whose ``version`` (bumped by every state write) has not
moved is skipped; a value that reads as before is not formatted again; only
clock-dependent families (``oauth_token_expires_in_seconds``,
``oauth_token_valid``) are read at every scrape. Texts are joined per family
in blocks of ``BLOCK`` providers, again only when one of them changed.
``Exposition.keep_rendered`` does that work on the event loop as results come
in, a block at a time, so a scrape has little left to do. ``render()`` only
reads state; it is safe to call from a thread other than the event loop's
(see ``exporter.state``). Sample::

    oauth_token_expires_in_seconds{provider="simpledocs-prod"} 4187.3
    oauth_token_refresh_failures_total{error="invalid_client",provider="simpledocs-prod"} 3.0
    oauth_probe_success{probe="documents",provider="simpledocs-prod"} 1.0

``Exposition`` adds the client library's ``process_*`` and ``python_*``
collectors.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.openmetrics.exposition import generate_latest as _om_generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from exporter.metrics import FAMILIES, Family, Number, StateSource
from exporter.state import Histogram, ProbeState, ProviderState

__all__ = ["Exposition", "StateSource", "TokenHealthCollector"]

log = logging.getLogger("exporter.collector")

#: prometheus-client's value formatting (Go's float formatting), typed.
_float_str: Callable[[float], str] = floatToGoString
#: prometheus-client's OpenMetrics encoder, typed.
_om_latest: Callable[[CollectorRegistry], bytes] = _om_generate_latest

#: floatToGoString() of small whole numbers, made once.
_SMALL: tuple[str, ...] = tuple(_float_str(float(i)) for i in range(4096))

#: Scrape times kept to foresee the next scrape (``Exposition.render_due``).
SCRAPES_REMEMBERED = 8


def _value(v: Number) -> str:
    """``floatToGoString(v)``, the same string, several times faster.

    A table serves the small whole numbers counters hold; other finite
    numbers skip the library's infinity and NaN checks. ``tests/test_collector``
    compares the two over many values.
    """
    if v.__class__ is int:
        if 0 <= v < 4096:
            return _SMALL[v]
        v = float(v)
    s = repr(v)
    if s[-1] in "fn":  # inf, -inf, nan
        return _float_str(v)
    if v > 0:
        dot = s.find(".")
        # Go switches to exponents sooner than Python (prometheus-client's rule).
        if dot > 6:
            mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
            return f"{mantissa}e+{dot - 1:02d}"
    return s


def _esc(value: str) -> str:
    """A label value escaped as prometheus-client escapes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _le(bound: float) -> str:
    return f"{bound:g}"


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs, ``+Inf`` last."""
    out, total = [], 0
    for le, n in zip((*map(_le, h.bounds), "+Inf"), h.counts, strict=True):
        total += n
        out.append((le, float(total)))
    return out


def _header(name: str, type: str, doc: str, openmetrics: bool) -> str:
    """The HELP and TYPE lines prometheus-client writes for a family."""
    if openmetrics:
        doc = doc.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')
        return f"# HELP {name} {doc}\n# TYPE {name} {type}\n"
    name = name + "_total" if type == "counter" else name
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {type}\n"


#: Reads what one family exports for one subject, as a comparable value: (subject, now).
_Read = Callable[[Any, float], Any]
#: Writes that value as exposition lines: (value, the subject's label string).
_Format = Callable[[Any, str], str]


@dataclass(frozen=True)
class _Plan:
    """How one family is exposed, fixed at start-up (the bucket choice).

    Reading is cheap and formatting is not (Go float formatting): the
    renderer formats again only when what it read differs from last time.
    """

    family: Family[Any]
    type: str  # what TYPE says: a histogram without buckets is a summary
    read: _Read
    format: _Format

    @property
    def cached(self) -> bool:
        return not self.family.per_scrape and self.family.subject != "exporter"

    def lines(self, subject: Any, base: str, now: float) -> str:
        return self.format(self.read(subject, now), base)


def _plan(family: Family[Any], buckets: bool) -> _Plan:
    name = family.name
    if family.histogram is not None:
        read_h = family.histogram
        if buckets:
            def read_buckets(subject: Any, now: float) -> Any:
                h = read_h(subject)
                return h.bounds, tuple(h.counts), h.sum

            def format_buckets(data: Any, base: str) -> str:
                bounds, counts, total_sum = data
                # "le" sorts before both "probe" and "provider".
                sep = "," if base else ""
                out, total = [], 0
                for le, n in zip((*map(_le, bounds), "+Inf"), counts, strict=True):
                    total += n
                    out.append(f'{name}_bucket{{le="{le}"{sep}{base}}} {_value(total)}\n')
                out.append(f"{name}_count{{{base}}} {_value(total)}\n")
                out.append(f"{name}_sum{{{base}}} {_value(total_sum)}\n")
                return "".join(out)

            return _Plan(family, "histogram", read_buckets, format_buckets)

        def read_summary(subject: Any, now: float) -> Any:
            h = read_h(subject)
            return h.count, h.sum

        def format_summary(data: Any, base: str) -> str:
            count, total_sum = data
            return (f"{name}_count{{{base}}} {_value(count)}\n"
                    f"{name}_sum{{{base}}} {_value(total_sum)}\n")

        return _Plan(family, "summary", read_summary, format_summary)

    sample = name + "_total" if family.type == "counter" else name
    if family.value is not None:
        if family.subject == "exporter":
            def format_plain(v: Any, base: str) -> str:
                return "" if v is None else f"{sample} {_value(v)}\n"

            return _Plan(family, family.type, family.value, format_plain)

        def format_value(v: Any, base: str) -> str:
            return "" if v is None else f"{sample}{{{base}}} {_value(v)}\n"

        return _Plan(family, family.type, family.value, format_value)

    assert family.values is not None
    read_many = family.values
    # Labels are written sorted by name, as prometheus-client does. The
    # subject's own labels sort next to each other in every family we have;
    # the extra ones go before or after them.
    ordered = sorted(family.labels)
    base_names = [n for n in ordered if n not in family.extra_labels]
    if base_names:
        first = ordered.index(base_names[0])
        if ordered[first:first + len(base_names)] != base_names:
            raise ValueError(f"{name}: extra labels sort between the subject's labels")
    else:
        first = 0
    before = [(n, family.extra_labels.index(n)) for n in ordered[:first]]
    after = [(n, family.extra_labels.index(n)) for n in ordered[first + len(base_names):]]

    def read_labelled(subject: Any, now: float) -> Any:
        return tuple(read_many(subject, now))

    def format_labelled(pairs: Any, base: str) -> str:
        out = []
        for extra, v in pairs:
            parts = [f'{n}="{_esc(extra[i])}"' for n, i in before]
            if base:
                parts.append(base)
            parts += [f'{n}="{_esc(extra[i])}"' for n, i in after]
            out.append(f"{sample}{{{','.join(parts)}}} {_value(v)}\n")
        return "".join(out)

    return _Plan(family, family.type, read_labelled, format_labelled)


#: Providers per block. The exposition is cached in blocks (one family, this
#: many providers or their probes), so a scrape joins a few hundred pieces
#: rather than one per family per subject; a block is joined again only when
#: one of its subjects' text for that family changed.
BLOCK = 128


#: What no reader returns: a subject not rendered yet.
_UNREAD = object()


class _Subject:
    """One provider's or probe's text per family, valid while its version holds."""

    __slots__ = ("base", "data", "texts", "version")

    def __init__(self, base: str, families: int) -> None:
        self.version = -1  # never rendered
        self.base = base
        #: Per family: what was read last, and its text.
        self.data: list[Any] = [_UNREAD] * families
        self.texts: list[str] = [""] * families


class _Block:
    """Up to ``BLOCK`` providers with their probes, and their text per family."""

    __slots__ = ("probes", "providers", "texts")

    def __init__(self, providers: list[tuple[ProviderState, _Subject]],
                 probes: list[tuple[ProbeState, _Subject]], families: int) -> None:
        self.providers = providers
        self.probes = probes
        #: Per family (the collector's plan order): the joined bytes, None when stale.
        self.texts: list[bytes | None] = [None] * families


class TokenHealthCollector(Collector):
    """The exporter's own families (``exporter.metrics.FAMILIES``) for a state source."""

    def __init__(self, source: StateSource, clock: Callable[[], float] = time.time, *,
                 histogram_buckets: bool = False, families: Sequence[Family[Any]] = FAMILIES,
                 ) -> None:
        self._source = source
        self._clock = clock
        self.histogram_buckets = histogram_buckets
        self._plans = [_plan(f, histogram_buckets) for f in families]
        # Per subject kind, the cached families: (index in _plans, read, format, static).
        self._provider_plans = [(i, p.read, p.format, p.family.static)
                                for i, p in enumerate(self._plans)
                                if p.cached and p.family.subject == "provider"]
        self._probe_plans = [(i, p.read, p.format, p.family.static)
                             for i, p in enumerate(self._plans)
                             if p.cached and p.family.subject == "probe"]
        self._scrape_plans = [(i, p.read, p.format) for i, p in enumerate(self._plans)
                              if p.family.per_scrape]
        self._cached_indexes = [i for i, p in enumerate(self._plans) if p.cached]
        self._headers = {om: [_header(p.family.name, p.type, p.family.help, om).encode()
                              for p in self._plans] for om in (False, True)}
        self._states: list[ProviderState] = []
        #: What the source returned when the blocks were last checked against it: a
        #: source that returns the same object while nothing changed saves a compare.
        self._seen: object = None
        self._blocks: list[_Block] = []
        self._lock = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        # Declaring no descriptions keeps registration from calling collect().
        return iter(())

    # -- the registry path ---------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        states = list(self._source.provider_states())
        for plan in self._plans:
            family = plan.family
            metric = _new_metric(family, plan.type)
            subjects: list[tuple[Any, list[str]]]
            if family.subject == "provider":
                subjects = [(st, [st.provider.name]) for st in states]
            elif family.subject == "probe":
                subjects = [(ps, [st.provider.name, ps.probe.name])
                            for st in states for ps in st.probes.values()]
            else:
                subjects = [(self._source, [])]
            for subject, base in subjects:
                _add_samples(metric, family, subject, base, now)
            yield metric

    # -- the direct renderer -------------------------------------------------------------

    def render(self, openmetrics: bool = False, *, eof: bool = True) -> bytes:
        """``collect()`` as exposition text, written directly.

        Byte for byte what prometheus-client's ``generate_latest`` (or, with
        ``openmetrics``, ``openmetrics.exposition.generate_latest``) returns for
        a registry holding only this collector, with the default name escaping
        (all our names are legacy-valid). ``eof=False`` leaves out OpenMetrics'
        final ``# EOF``, for a caller that appends other collectors' families.
        """
        parts = self.pieces(openmetrics)
        if openmetrics and eof:
            parts.append(b"# EOF\n")
        return b"".join(parts)

    def pieces(self, openmetrics: bool = False) -> list[bytes]:
        """``render(openmetrics, eof=False)`` in pieces, to be joined."""
        with self._lock:
            return self._render(openmetrics)

    def _render(self, openmetrics: bool) -> list[bytes]:
        now = self._clock()
        changed = self._changed()
        if changed is not None:
            self._rebuild(*changed)
        blocks = self._blocks
        for block in blocks:
            self._refresh(block, now)

        out: list[bytes] = []
        for i, (plan, header) in enumerate(zip(self._plans, self._headers[openmetrics],
                                               strict=True)):
            out.append(header)
            family = plan.family
            lines = plan.lines
            if family.subject == "exporter":
                out.append(lines(self._source, "", now).encode())
            else:
                for block in blocks:
                    text = block.texts[i]
                    out.append(self._join(block, i) if text is None else text)
        return out

    def _changed(self) -> tuple[list[ProviderState], object] | None:
        """None if the blocks were built for the source's providers as they are now;
        else the providers, and the object the source gave them in."""
        states = self._source.provider_states()
        if states is self._seen:
            return None
        current = list(states)
        if current == self._states:  # identity comparison: ProviderState has no __eq__
            self._seen = states
            return None
        return current, states

    def _join(self, block: _Block, i: int) -> bytes:
        """A block's text for family ``i``, joined again from its subjects'."""
        rows = block.providers if self._plans[i].family.subject == "provider" else block.probes
        text = block.texts[i] = "".join([sub.texts[i] for _, sub in rows]).encode()
        return text

    def _rebuild(self, states: list[ProviderState], seen: object = None) -> None:
        """New blocks for a new set of providers, keeping what is still valid."""
        families = len(self._plans)
        known = {st: sub for block in self._blocks for st, sub in block.providers}
        known_probes = {ps: sub for block in self._blocks for ps, sub in block.probes}
        blocks = []
        for start in range(0, len(states), BLOCK):
            providers, probes = [], []
            for st in states[start:start + BLOCK]:
                sub = known.get(st)
                if sub is None:
                    sub = _Subject(f'provider="{_esc(st.provider.name)}"', families)
                providers.append((st, sub))
                for ps in st.probes.values():
                    psub = known_probes.get(ps)
                    if psub is None:
                        psub = _Subject(f'probe="{_esc(ps.probe.name)}",{sub.base}', families)
                    probes.append((ps, psub))
            blocks.append(_Block(providers, probes, families))
        self._states, self._blocks, self._seen = states, blocks, seen

    def refresh_block(self, index: int) -> bool:
        """Render again what changed in one block, ahead of the next scrape.

        For the event loop, between its jobs (``Exposition.keep_rendered``): a
        scrape then finds only the last moments' changes left to render. Does
        nothing (False) while a scrape holds the renderer, or when the set of
        providers changed (the scrape rebuilds the blocks) or the block is gone.
        """
        if not self._lock.acquire(blocking=False):
            return False
        try:
            if index >= len(self._blocks) or self._changed() is not None:
                return False
            block = self._blocks[index]
            self._refresh(block, self._clock(), scrape=False)
            for i in self._cached_indexes:
                if block.texts[i] is None:
                    self._join(block, i)
            return True
        finally:
            self._lock.release()

    @property
    def blocks(self) -> int:
        return len(self._blocks)

    def _refresh(self, block: _Block, now: float, scrape: bool = True) -> None:
        """Render again the subjects of a block that changed; mark what moved.
        ``scrape``: also the clock-dependent families."""
        stale = block.texts
        for i, read, format in self._scrape_plans if scrape else ():
            for st, sub in block.providers:
                value = read(st, now)
                if value != sub.data[i]:
                    sub.data[i] = value
                    sub.texts[i] = format(value, sub.base)
                    stale[i] = None
        for subjects, plans in ((block.providers, self._provider_plans),
                                (block.probes, self._probe_plans)):
            for subject, sub in subjects:
                # Read before rendering: a write during the render bumps it again.
                version = subject.version
                if version == sub.version:
                    continue
                first = sub.version == -1
                sub.version = version
                data, texts, base = sub.data, sub.texts, sub.base
                for i, read, format, static in plans:
                    if static and not first:
                        continue
                    value = read(subject, now)
                    if value != data[i]:
                        data[i] = value
                        texts[i] = format(value, base)
                        stale[i] = None


def _new_metric(family: Family[Any], type: str) -> Metric:
    labels = list(family.labels)
    if type == "counter":
        return CounterMetricFamily(family.name, family.help, labels=labels)
    if type == "histogram":
        return HistogramMetricFamily(family.name, family.help, labels=labels)
    if type == "summary":
        return SummaryMetricFamily(family.name, family.help, labels=labels)
    return GaugeMetricFamily(family.name, family.help, labels=labels)


def _add_samples(metric: Metric, family: Family[Any], subject: Any, base: list[str],
                 now: float) -> None:
    if isinstance(metric, HistogramMetricFamily):
        assert family.histogram is not None
        h = family.histogram(subject)
        metric.add_metric(base, _buckets(h), h.sum)
    elif isinstance(metric, SummaryMetricFamily):
        assert family.histogram is not None
        h = family.histogram(subject)
        metric.add_metric(base, h.count, h.sum)
    elif family.value is not None:
        v = family.value(subject, now)
        if v is not None:
            assert isinstance(metric, GaugeMetricFamily | CounterMetricFamily)
            metric.add_metric(base, v)
    else:
        assert family.values is not None
        assert isinstance(metric, GaugeMetricFamily | CounterMetricFamily)
        for extra, v in family.values(subject, now):
            metric.add_metric([*base, *extra], v)


class Exposition:
    """What ``/metrics`` serves: our families, then prometheus-client's standard
    ``process_*``/``python_*`` collectors.

    ``registry`` holds all of them (for ``get_sample_value`` and the encoders);
    ``render()`` is byte for byte ``generate_latest(registry)`` (or the
    OpenMetrics encoder's output), made fast for our part. ``render`` only
    reads state and may run in any thread (the web server calls it off the
    event loop; its gzip is ``exporter.web.compression``).
    """

    def __init__(self, source: StateSource, *, histogram_buckets: bool = False,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 standard: Sequence[Collector] = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR,
                                                  GC_COLLECTOR)) -> None:
        self.collector = TokenHealthCollector(source, clock,
                                              histogram_buckets=histogram_buckets)
        self._monotonic = monotonic
        #: When the last scrapes came (``monotonic``), to render just ahead of the next.
        self._scrapes: deque[float] = deque(maxlen=SCRAPES_REMEMBERED)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        #: The standard collectors alone, rendered by prometheus-client (a few
        #: dozen samples), after ours.
        self._standard = CollectorRegistry(auto_describe=False)
        for c in standard:
            self.registry.register(c)
            self._standard.register(c)

    def _pieces(self, openmetrics: bool) -> list[bytes]:
        pieces = self.collector.pieces(openmetrics)
        # The OpenMetrics encoder ends with "# EOF\n", which must come last, once.
        pieces.append((_om_latest if openmetrics else generate_latest)(self._standard))
        return pieces

    def render(self, openmetrics: bool = False) -> bytes:
        """The whole exposition, text format 0.0.4 or OpenMetrics 1.0 (one scrape)."""
        self._scrapes.append(self._monotonic())  # deque.append: safe from any thread
        return b"".join(self._pieces(openmetrics))

    def render_due(self, lead: float) -> bool:
        """Whether a scrape may come within ``lead`` seconds, so that rendering
        ahead of it is worth a pass over every block.

        The next scrape is expected one *shortest recent gap* after the last
        one: with one Prometheus that is its scrape interval; with two (an HA
        pair, each at its own phase) it is the shorter of the two gaps between
        them, so the pass comes early rather than late. Until two scrapes have
        come (nothing to go by), and once the expected time has passed (a
        scrape is late, or scrapes stopped), every pass is due, as if nobody
        knew when Prometheus comes.
        """
        scrapes = list(self._scrapes)
        if len(scrapes) < 2:
            return True
        gap = min(b - a for a, b in itertools.pairwise(scrapes))
        return self._monotonic() >= scrapes[-1] + gap - lead

    async def keep_rendered(self, interval: float = 1.0) -> None:
        """Run on the event loop: render again, one block of providers at a
        time, what changed, so that a scrape has little left.

        Probes write ~70 results a second at 1,000 credentials; rendering them
        before the scrape costs the loop a little, in slices of at most one
        block, where a scrape every 15 s would otherwise render ~1,000 at once
        holding the GIL (benchmarks/README.md, scrape). A pass reads every
        subject's version and joins again every block that changed, so it runs
        only in the last ``2 * interval`` seconds before the next scrape is
        expected (``render_due``): at a 15 s scrape interval, 2 passes in 15
        instead of 15, and the scrape still finds at most ``interval`` seconds
        of changes left. Never raises; ends when cancelled.
        """
        while True:
            await asyncio.sleep(interval)
            try:
                if not self.render_due(2 * interval):
                    continue
                for index in range(self.collector.blocks):
                    self.collector.refresh_block(index)
                    await asyncio.sleep(0)  # let the loop's jobs run between blocks
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the loop's other work
                log.exception("rendering metrics ahead of the scrape failed")
