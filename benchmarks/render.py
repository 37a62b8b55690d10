"""/metrics render time: the real collector against plain prometheus-client series.

For each size N this builds N ``ProviderState``s (2 probes each) filled in as
after weeks of running: a token held, renewal planned, counters in the
thousands, a few failures, latency histograms with observations. It then times
``prometheus_client.generate_latest`` over a registry holding the real
``TokenHealthCollector`` (what ``/metrics`` serves in the Prometheus text
format), against the baseline below, runs interleaved, median reported.

Baseline: a custom collector that, at each scrape, builds ``GaugeMetricFamily``
objects and ``add_metric()``s exactly the samples ours produced (same sample
names, label names, label values and values, so the same series count and
the same bytes to format). It is the least work prometheus-client can do to
render that exposition from data already at hand, so the ratio isolates what
our collector adds: reading state, computing expiry and validity, building
histograms. Registered labelled ``Gauge``s (the usual direct-instrumentation
style) are shown as a second reference up to ``--gauges-max`` credentials: they
render slower than the custom baseline (the client walks its children under
locks), so comparing against them would flatter us. The script checks that the
baseline's sample lines are the same as ours.

    python -m benchmarks.render                   # 100, 1,000 and 5,000 credentials
    python -m benchmarks.render --sizes 1000 --runs 9
    python -m benchmarks.render --quick           # smoke test
"""

from __future__ import annotations

import argparse
import gc
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as _om_latest
from pydantic import SecretStr

from benchmarks._common import ALL_KINDS, add_sizes_argument, build_config, machine, median
from exporter.collector import TokenHealthCollector
from exporter.errors import ErrorClass
from exporter.state import ProviderState
from exporter.tokens import Token

#: prometheus-client's OpenMetrics encoder (what Prometheus negotiates by default), typed.
openmetrics_latest: Callable[[CollectorRegistry], bytes] = _om_latest

TARGET_MS_AT_1000 = 100.0
TARGET_RATIO = 1.5
DEFAULT_SIZES = (100, 1000, 5000)


def filled_states(n: int, now: float, seed: int = 1) -> list[ProviderState]:
    """``n`` credentials over every preset, 2 probes each, as after ~30 days of running."""
    rng = random.Random(seed)
    base_urls = {kind: f"https://{kind}.example.com" for kind in ALL_KINDS}
    config = build_config(n, base_urls, ALL_KINDS, probe_interval=30)
    states = []
    for provider in config.providers:
        st = ProviderState(provider)
        lifetime = provider.default_lifetime or 3600.0
        issued = now - rng.uniform(0, 0.6 * lifetime)
        scopes = frozenset((provider.scope or "").split()) or None
        st.token = Token(SecretStr(f"{rng.getrandbits(256):064x}"), issued, issued + lifetime,
                         scopes, "expires_in")
        st.next_renewal = issued + rng.uniform(0.62, 0.67) * lifetime
        st.attempts = st.completed = rng.randrange(900, 1200)
        st.failures[ErrorClass.TIMEOUT] = rng.randrange(3)
        st.failures[ErrorClass.SERVER_ERROR] = rng.randrange(2)
        st.last_success = issued
        for _ in range(50):
            st.duration.observe(rng.lognormvariate(-2.0, 0.5))
        for ps in st.probes.values():
            ps.attempts = rng.randrange(86_000, 86_400)
            ps.failures[ErrorClass.SERVER_ERROR] = rng.randrange(5)
            ps.failures[ErrorClass.TIMEOUT] = rng.randrange(3)
            ps.success, ps.status = True, 200
            ps.last_run = ps.last_success = now - rng.uniform(0, 30)
            for _ in range(100):
                ps.duration.observe(rng.lognormvariate(-3.0, 0.7))
        states.append(st)
    return states


@dataclass
class StaticSource:
    """A ``StateSource`` over fixed states (the exporter is not running)."""

    states: list[ProviderState]
    config_reload_ok: bool = True
    config_reload_time: float = 0.0

    def provider_states(self) -> Iterable[ProviderState]:
        return self.states


#: (sample name, label names, [(label values, value)]), one entry per sample name.
Shape = list[tuple[str, tuple[str, ...], list[tuple[tuple[str, ...], float]]]]


def shape_of(collector: TokenHealthCollector) -> Shape:
    """Our samples, grouped by sample name, as plain rows."""
    rows: dict[str, tuple[tuple[str, ...], list[tuple[tuple[str, ...], float]]]] = {}
    for family in collector.collect():
        for s in family.samples:
            names = tuple(s.labels)
            _, bucket = rows.setdefault(s.name, (names, []))
            bucket.append((tuple(s.labels[k] for k in names), float(s.value)))
    return [(name, names, bucket) for name, (names, bucket) in rows.items()]


class PlainCollector:
    """The baseline: the same samples as plain gauges, built at scrape time."""

    def __init__(self, shape: Shape) -> None:
        self._shape = shape

    def collect(self) -> Iterator[Metric]:
        for name, label_names, rows in self._shape:
            family = GaugeMetricFamily(name, "Baseline series.", labels=list(label_names))
            for values, value in rows:
                family.add_metric(values, value)
            yield family


def gauge_registry(shape: Shape) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for name, label_names, rows in shape:
        gauge = Gauge(name, "Reference series.", label_names, registry=registry)
        for values, value in rows:
            (gauge.labels(*values) if label_names else gauge).set(value)
    return registry


def sample_lines(text: bytes) -> list[bytes]:
    return sorted(line for line in text.splitlines() if line and not line.startswith(b"#"))


def timed(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median seconds per function; runs interleaved so drift hits all alike."""
    times: dict[str, list[float]] = {key: [] for key in fns}
    for fn in fns.values():  # warm-up
        fn()
    for _ in range(runs):
        for key, fn in fns.items():
            # Start each run with no garbage from the last, so neither side
            # pays for the other's collections.
            gc.collect()
            started = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - started)
    return {key: median(values) for key, values in times.items()}


def measure(n: int, runs: int, gauges_max: int) -> dict[str, float]:
    now = time.time()
    collector = TokenHealthCollector(StaticSource(filled_states(n, now), True, now),
                                     clock=lambda: now)
    ours = CollectorRegistry(auto_describe=False)
    ours.register(collector)
    shape = shape_of(collector)
    plain = CollectorRegistry(auto_describe=False)
    plain.register(PlainCollector(shape))

    ours_text, plain_text = generate_latest(ours), generate_latest(plain)
    lines = sample_lines(ours_text)
    if lines != sample_lines(plain_text):
        raise AssertionError("the baseline does not render the same samples as ours")
    # The collector's direct renderer must be byte-identical to the encoders.
    # (hasattr: so the script also measures older collectors, for before/after.)
    direct = hasattr(collector, "render")
    if direct and collector.render() != ours_text:
        raise AssertionError("TokenHealthCollector.render() differs from generate_latest()")
    if direct and collector.render(openmetrics=True) != openmetrics_latest(ours):
        raise AssertionError("TokenHealthCollector.render(openmetrics=True) differs from "
                             "openmetrics generate_latest()")

    fns: dict[str, Callable[[], object]] = {
        "ours": lambda: generate_latest(ours),
        "plain": lambda: generate_latest(plain),
        "collect": lambda: list(collector.collect()),
        "openmetrics": lambda: openmetrics_latest(ours),
    }
    if direct:
        fns["direct"] = collector.render
    if n <= gauges_max:
        gauges = gauge_registry(shape)
        fns["gauges"] = lambda: generate_latest(gauges)
    result = timed(fns, runs)
    result["series"] = len(lines)
    result["bytes"] = len(ours_text)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.render",
                                     description=__doc__.split("\n\n")[0])
    add_sizes_argument(parser, DEFAULT_SIZES)
    parser.add_argument("--runs", type=int, default=7, help="timed runs per size (median)")
    parser.add_argument("--gauges-max", type=int, default=1000,
                        help="largest size to also time registered Gauges at")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.runs = [10], 2

    print(f"render  {machine()}")
    print("medians in ms; ratio = ours / plain (target < "
          f"{TARGET_RATIO:g}); target at 1,000 credentials < {TARGET_MS_AT_1000:g} ms")
    print(f"{'creds':>6} {'series':>8} {'MB':>6} {'ours':>8} {'plain':>8} {'ratio':>6} "
          f"{'collect':>8} {'gauges':>8} {'openmetr':>8} {'direct':>8}")
    for n in args.sizes:
        r = measure(n, args.runs, args.gauges_max)
        gauges = f"{r['gauges'] * 1e3:>8.1f}" if "gauges" in r else f"{'-':>8}"
        print(f"{n:>6} {int(r['series']):>8} {r['bytes'] / 1e6:>6.1f} {r['ours'] * 1e3:>8.1f} "
              f"{r['plain'] * 1e3:>8.1f} {r['ours'] / r['plain']:>6.2f} "
              f"{r['collect'] * 1e3:>8.1f} {gauges} {r['openmetrics'] * 1e3:>8.1f} "
              f"{r['direct'] * 1e3 if 'direct' in r else float('nan'):>8.1f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
