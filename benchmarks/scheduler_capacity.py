"""How many credentials one exporter process can schedule on time.

For each size N (credentials, 2 probes each, every probe at a 30 s interval
with the exporter's ±10 % jitter) this runs a real ``Exporter`` against the
provider simulator and measures *scheduling lateness*: how long after its
scheduled fire time each job actually starts running on the event loop.

Method: each probe's loop reports, through the exporter's ``on_probe_lateness``
hook, how long after its planned time (jitter included) a run really starts.
Lateness so measured includes everything between "due" and "running": the
timer's wake-up and the event loop working through whatever else is ready
(probe responses, renewals, a /metrics render holding the GIL).

Each size runs in a fresh process (so sizes do not share heap or sockets), and
the simulator runs in another process, so it does not compete for the
exporter's GIL (the machine's second core serves it). A separate scraper
process fetches /metrics every ``--scrape-interval`` seconds, as Prometheus
would, because a render holds the GIL and so competes with the event loop.

Start-up (every token requested at once, then every probe's first run) is
reported separately from the steady state that follows it.

    python -m benchmarks.scheduler_capacity                  # full run, ~12 minutes
    python -m benchmarks.scheduler_capacity --sizes 2000 --duration 90
    python -m benchmarks.scheduler_capacity --direct-render --sizes 3000,4000,5000,6000
    python -m benchmarks.scheduler_capacity --quick          # smoke test, seconds

``--direct-render`` serves /metrics with ``TokenHealthCollector.render()``,
as the exporter does; without it, through prometheus-client's encoder (the
figures before the direct renderer was served).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import multiprocessing
import multiprocessing.connection
import sys
import time
from collections.abc import Sequence
from typing import Any

TARGET_P99 = 1.0
#: The Accept header of a Prometheus 2.x scrape with its default scrape protocols.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,"
                     "application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
DEFAULT_SIZES = (500, 1000, 2000, 3000, 4000)


# --------------------------------------------------------------------------- scraper process


def _scrape(conn: multiprocessing.connection.Connection, url: str, interval: float,
            max_seconds: float) -> None:
    """Child process: GET ``url`` every ``interval`` s until told to stop; report durations."""
    import httpx

    durations: list[float] = []
    deadline = time.monotonic() + max_seconds
    # Ask as Prometheus does (OpenMetrics first, gzip), so the exporter does the
    # work a real scrape costs it.
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    with httpx.Client(timeout=60, headers=headers) as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                client.get(url).raise_for_status()
                durations.append(time.monotonic() - started)
            except httpx.HTTPError:
                durations.append(float("nan"))
            # Sleeping on the pipe doubles as the stop signal.
            if conn.poll(max(0.0, interval - (time.monotonic() - started))):
                break
    conn.send(durations)


# --------------------------------------------------------------------------- one size


async def _measure(n: int, opts: argparse.Namespace) -> dict[str, Any]:
    from benchmarks._common import (
        UNLIMITED_KINDS,
        percentile,
        simulator_process,
        wait_started_up,
    )
    from benchmarks._common import build_config as _build
    from exporter.logsetup import Redactor, setup_logging
    from exporter.service import build_service

    interval, duration = opts.interval, opts.duration
    scrape_interval, startup_timeout = opts.scrape_interval, opts.startup_timeout

    # (lateness in s, wall-clock start)
    samples: list[tuple[float, float]] = []

    def on_lateness(late: float) -> None:
        samples.append((late, time.time()))

    # Full (generation 2) garbage collections hold the GIL from start to end,
    # whichever thread runs them, so they stall the event loop: record them.
    gc_pauses: list[tuple[float, float]] = []  # (wall-clock end, seconds), generation 2
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif info["generation"] == 2:
            gc_pauses.append((time.time(), time.perf_counter() - gc_started[0]))

    gc.callbacks.append(on_gc)

    max_seconds = startup_timeout + duration + 120
    with simulator_process(n, UNLIMITED_KINDS, max_seconds=max_seconds) as sim:
        config = _build(n, sim.base_urls, UNLIMITED_KINDS, probe_interval=interval)
        # As in production (cli.py): a redacting log handler at info level.
        redactor = Redactor()
        setup_logging("info", "text", redactor, stream=io.StringIO())
        service = build_service(config, redactor=redactor, on_probe_lateness=on_lateness,
                                direct_render=opts.direct_render)
        exporter, web = service.exporter, service.web
        started = time.time()
        await service.start()
        states = list(exporter.provider_states())
        await wait_started_up(exporter, n, startup_timeout, 0.2)
        startup_seconds = time.time() - started
        steady_from = time.time()

        ctx = multiprocessing.get_context("spawn")
        scrape_conn = scraper = None
        if scrape_interval > 0:
            scrape_conn, child = ctx.Pipe()
            scraper = ctx.Process(
                target=_scrape, daemon=True,
                args=(child, f"http://127.0.0.1:{web.port}/metrics", scrape_interval,
                      duration + 60))
            scraper.start()
        await asyncio.sleep(duration)
        scrapes: list[float] = []
        if scraper is not None and scrape_conn is not None:
            scrape_conn.send("stop")
            if scrape_conn.poll(120):
                scrapes = scrape_conn.recv()
            scraper.join(10)
        sim_stats = sim.stats()
        failures = sum(sum(p.failures.values()) for s in states for p in s.probes.values())
        attempts = sum(p.attempts for s in states for p in s.probes.values())
        await service.stop()
    gc.callbacks.remove(on_gc)
    steady_gc = [seconds for at, seconds in gc_pauses if at >= steady_from]

    startup = [late for late, at in samples if at < steady_from]
    steady = [late for late, at in samples if at >= steady_from]
    return {
        "credentials": n,
        "startup_seconds": startup_seconds,
        "startup_jobs": len(startup),
        "startup_p99": percentile(startup, 99),
        "startup_max": max(startup, default=float("nan")),
        "steady_seconds": duration,
        "steady_jobs": len(steady),
        "steady_runs_per_second": len(steady) / duration,
        "p50": percentile(steady, 50),
        "p99": percentile(steady, 99),
        "max": max(steady, default=float("nan")),
        "probe_attempts": attempts,
        "probe_failures": failures,
        "gc2_count": len(steady_gc),
        "gc2_max": max(steady_gc, default=0.0),
        "scrapes": len(scrapes),
        "scrape_median": sorted(scrapes)[len(scrapes) // 2] if scrapes else float("nan"),
        "simulator": sim_stats,
    }


def _child(args: argparse.Namespace) -> None:
    result = asyncio.run(_measure(args.child, args))
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- driver


def run_size(n: int, opts: argparse.Namespace) -> dict[str, Any]:
    """Run one size in a fresh interpreter and return what it measured."""
    cmd = [sys.executable, "-m", "benchmarks.scheduler_capacity", "--child", str(n),
           "--interval", str(opts.interval), "--duration", str(opts.duration),
           "--scrape-interval", str(opts.scrape_interval),
           "--startup-timeout", str(opts.startup_timeout)]
    if opts.direct_render:
        cmd.append("--direct-render")
    from benchmarks._common import run_child

    return run_child(cmd, n, timeout=opts.startup_timeout + opts.duration + 300)


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks._common import add_sizes_argument, machine

    parser = argparse.ArgumentParser(prog="python -m benchmarks.scheduler_capacity",
                                     description=__doc__.split("\n\n")[0])
    add_sizes_argument(parser, DEFAULT_SIZES)
    parser.add_argument("--interval", type=float, default=30.0, help="probe interval (s)")
    parser.add_argument("--duration", type=float, default=90.0,
                        help="steady-state seconds measured per size")
    parser.add_argument("--scrape-interval", type=float, default=15.0,
                        help="GET /metrics this often during the measurement (0: never)")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--direct-render", action="store_true",
                        help="serve /metrics with TokenHealthCollector.render(), as the "
                        "exporter does (default: prometheus-client's encoder)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny run to prove the script works (smoke test)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args)
        return 0
    if args.quick:
        args.sizes, args.interval, args.duration = [8], 1.0, 3.0
        args.scrape_interval, args.startup_timeout = 1.0, 60.0

    print(f"scheduler_capacity  {machine()}")
    print(f"2 probes per credential every {args.interval:g} s (±10 % jitter); "
          f"{args.duration:g} s measured per size after start-up; "
          f"/metrics scraped every {args.scrape_interval:g} s"
          f"{' (direct render)' if args.direct_render else ''}; target p99 < {TARGET_P99:g} s")
    print(f"{'creds':>6} {'runs/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'start s':>8} {'start p99 s':>11} {'scrape s':>8} {'gc2':>4} {'gc2 ms':>7} "
          f"{'fails':>6}  ok")
    best = 0
    for n in args.sizes:
        r = run_size(n, args)
        ok = r["p99"] < TARGET_P99
        if ok:
            best = max(best, n)
        print(f"{n:>6} {r['steady_runs_per_second']:>7.1f} {r['p50'] * 1e3:>8.1f} "
              f"{r['p99'] * 1e3:>8.1f} {r['max'] * 1e3:>8.1f} {r['startup_seconds']:>8.1f} "
              f"{r['startup_p99']:>11.2f} {r['scrape_median']:>8.2f} "
              f"{r['gc2_count']:>4} {r['gc2_max'] * 1e3:>7.0f} "
              f"{r['probe_failures']:>6}  {'yes' if ok else 'NO'}", flush=True)
    print(f"largest size with steady-state p99 lateness < {TARGET_P99:g} s: {best or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
