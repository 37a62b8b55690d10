"""/metrics scrape time over real HTTP, as Prometheus scrapes it, while probes run.

Runs the real command line (``python -m exporter``) in a subprocess against the
simulator (another process) with N credentials x 2 probes every 30 s, waits
until every probe has run once, then GETs ``/metrics`` over a keep-alive
connection with Prometheus' ``Accept`` header (OpenMetrics preferred) and
``Accept-Encoding: gzip``, every ``--interval`` seconds (15 s by default, a
common Prometheus scrape interval, so the renderer's cache sees as many
changed probes between scrapes as it would in production). A scrape's time is
from sending the request until the last byte of the (compressed) body has
arrived. Reported: p50, p99, max, compressed and plain body size, series.

Floors, in the same run, once the exporter has stopped, for the same number
of series: ``static``, a plain HTTP server returning the exporter's last
body, already compressed (nothing left but HTTP and the transfer); and
``client``, prometheus-client's own ``start_http_server`` with that many
static gauge series (what a straightforward exporter would serve). Each is
scraped the same way, back to back; the ratios are ours / floor.

    python -m benchmarks.scrape                       # 1,000 credentials
    python -m benchmarks.scrape --sizes 100,1000 --scrapes 40
    python -m benchmarks.scrape --interval 1          # quicker, fewer changes per scrape
    python -m benchmarks.scrape --quick               # smoke test
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import (
    UNLIMITED_KINDS,
    add_sizes_argument,
    config_yaml,
    machine,
    median,
    percentile,
    simulator_process,
    spawned,
)
from exporter.web import compression
from tests.scripted import free_port

#: Prometheus' Accept header for a scrape (2.x/3.x with the default scrape protocols).
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.5,"
                     "text/plain;version=0.0.4;q=0.4,*/*;q=0.1")
HEADERS = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
TARGET_P50_MS = 30.0
TARGET_P99_MS = 60.0
DEFAULT_SIZES = (1000,)
ROOT = Path(__file__).resolve().parent.parent


def scrape(client: httpx.Client, url: str) -> tuple[float, bytes]:
    """One scrape: seconds until the last byte, and the body as sent (compressed)."""
    started = time.perf_counter()
    with client.stream("GET", url) as response:
        raw = b"".join(response.iter_raw())
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {response.status_code}")
    if response.headers.get("content-encoding") != "gzip":
        raise RuntimeError(f"{url}: not gzip-encoded")
    return elapsed, raw


def series_count(body: bytes) -> int:
    return sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))


def timed_scrapes(url: str, count: int, interval: float) -> tuple[list[float], bytes]:
    times: list[float] = []
    raw = b""
    with httpx.Client(headers=HEADERS, timeout=30, trust_env=False) as client:
        scrape(client, url)  # warm-up: connection, first render
        next_at = time.monotonic()
        for _ in range(count):
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            elapsed, raw = scrape(client, url)
            times.append(elapsed)
    return times, raw


# --------------------------------------------------------------------------- the exporter


def _probes_run(body: bytes) -> int:
    return len(re.findall(rb"^oauth_probe_attempts_total\{.*\} [1-9]", body, re.MULTILINE))


def _wait_started(base: str, n: int, timeout: float,
                  proc: subprocess.Popen[bytes]) -> tuple[float, int]:
    """Wait until ready, then until 99 % of the probes have sent a request or
    every probe has had its first turn (30 s plus the paced start); return the
    seconds until ready and how many probes have run. A credential whose first
    token request failed (on a loaded machine) may wait minutes for its
    backoff: the scrape is measured anyway, and the count says so."""
    started = time.monotonic()
    deadline = started + timeout
    want = math.ceil(0.99 * 2 * n)
    ready_after: float | None = None
    with httpx.Client(timeout=30, trust_env=False) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exporter exited with {proc.returncode}")
            time.sleep(0.5)
            with suppress(httpx.HTTPError):
                if ready_after is None:
                    if client.get(base + "/-/ready").status_code == 200:
                        ready_after = time.monotonic() - started
                    continue
                ran = _probes_run(client.get(base + "/metrics").content)
                turn = 30 + 2 * n / 250 + 10
                if ran >= want or time.monotonic() - started - ready_after > turn:
                    return ready_after, ran
    raise RuntimeError(f"{n} credentials not ready within {timeout}s")


def measure_exporter(n: int, scrapes: int, interval: float, startup_timeout: float,
                     buckets: bool) -> dict[str, Any]:
    with simulator_process(n, UNLIMITED_KINDS, max_seconds=startup_timeout + 3600) as sim, \
            tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "providers.yaml"
        config.write_text(config_yaml(n, sim.base_urls, UNLIMITED_KINDS, probe_interval=30),
                          encoding="utf-8")
        port = free_port()
        cmd = [sys.executable, "-m", "exporter", "--config.file", str(config),
               "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warning"]
        if buckets:
            cmd.append("--metrics.histogram-buckets")
        log = (Path(tmp) / "exporter.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            base = f"http://127.0.0.1:{port}"
            startup, probes_run = _wait_started(base, n, startup_timeout, proc)
            times, raw = timed_scrapes(base + "/metrics", scrapes, interval)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
    body = gzip.decompress(raw)
    return {"times": times, "raw": raw, "body": body, "startup": startup,
            "probes_run": probes_run}


# --------------------------------------------------------------------------- floors


def _serve_static(conn: Any, raw: bytes, content_type: str) -> None:
    """Child process: a threading HTTP server returning ``raw`` (gzip) to every GET."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    conn.send(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn.recv()  # until told to stop


def _serve_client(conn: Any, series: int) -> None:
    """Child process: prometheus-client's start_http_server with ``series`` static gauges."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    registry = CollectorRegistry()
    gauge = Gauge("bench_static", "A static gauge.", ["provider", "probe"], registry=registry)
    for i in range(series):
        gauge.labels(f"cred-{i // 28:05d}", f"series-{i % 28}").set(1_800_000_000.0 + i)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    conn.send(server.server_address[1])
    conn.recv()
    server.shutdown()


def measure_floor(target: Any, args: tuple[Any, ...], scrapes: int) -> list[float]:
    with spawned(target, args, name="floor server", start_timeout=120,
                 stop_timeout=10) as (_, port):
        times, _ = timed_scrapes(f"http://127.0.0.1:{port}/metrics", scrapes, 0.0)
        return times


def gzip_levels(body: bytes, levels: Sequence[int] = (1, 6, 9),
                isal_levels: Sequence[int] = (0, 1, 2)) -> str:
    """One-shot gzip of the body at each level of zlib and, where installed,
    ISA-L (the speed extra): CPU ms (median of 5) and size. The exporter uses
    ``exporter.web.compression``'s engine and level (marked ``*``)."""
    engines: list[tuple[str, Callable[[bytes, int], bytes], Sequence[int], int]] = [
        ("zlib", lambda data, level: zlib.compress(data, level, wbits=31), levels,
         compression.ZLIB_LEVEL)]
    if compression.isal_zlib is not None:
        isal = compression.isal_zlib
        engines.append(("isal", lambda data, level: bytes(isal.compress(data, level, wbits=31)),
                        isal_levels, compression.ISAL_LEVEL))
    parts = []
    for name, compress, engine_levels, chosen in engines:
        for level in engine_levels:
            runs = []
            for _ in range(5):
                started = time.process_time()
                size = len(compress(body, level))
                runs.append(time.process_time() - started)
            mark = "*" if name == compression.GZIP_ENGINE and level == chosen else ""
            parts.append(f"{name} {level}{mark}: {1000 * median(runs):.1f} ms, "
                         f"{size / 1000:.0f} KB")
    return "; ".join(parts)


# --------------------------------------------------------------------------- report


def _ms(values: Sequence[float], q: float | None = None) -> float:
    return 1000 * (median(values) if q is None else percentile(values, q))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scrape",
                                     description=__doc__.split("\n\n")[0])
    add_sizes_argument(parser, DEFAULT_SIZES)
    parser.add_argument("--scrapes", type=int, default=40, help="timed scrapes per size")
    parser.add_argument("--interval", type=float, default=15.0,
                        help="seconds between scrapes (default 15)")
    parser.add_argument("--floor-scrapes", type=int, default=100)
    parser.add_argument("--histogram-buckets", action="store_true",
                        help="run the exporter with --metrics.histogram-buckets")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.scrapes, args.interval, args.floor_scrapes = [10], 5, 0.2, 5
        args.startup_timeout = 40.0

    print(f"scrape  {machine()} load={os.getloadavg()[0]:.2f}")
    print(f"target: p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms over HTTP "
          f"with gzip; scrape every {args.interval:g} s, {args.scrapes} scrapes; "
          "probes every 30 s")
    print(f"{'creds':>6} {'series':>7} {'body KB':>8} {'gzip KB':>8} {'p50 ms':>7} "
          f"{'p99 ms':>7} {'max ms':>7} {'static':>7} {'ratio':>6} {'client':>7} "
          f"{'ratio':>6} {'ready s':>7} {'ran %':>6}  ok")
    for n in args.sizes:
        r = measure_exporter(n, args.scrapes, args.interval, args.startup_timeout,
                             args.histogram_buckets)
        series = series_count(r["body"])
        static = measure_floor(_serve_static, (r["raw"], "application/openmetrics-text; "
                                               "version=1.0.0; charset=utf-8"),
                               args.floor_scrapes)
        client = measure_floor(_serve_client, (series,), args.floor_scrapes)
        p50, p99 = _ms(r["times"]), _ms(r["times"], 99)
        ok = p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS
        print(f"{n:>6} {series:>7} {len(r['body']) / 1000:>8.0f} {len(r['raw']) / 1000:>8.0f} "
              f"{p50:>7.1f} {p99:>7.1f} {1000 * max(r['times']):>7.1f} "
              f"{_ms(static):>7.1f} {p50 / _ms(static):>6.1f} {_ms(client):>7.1f} "
              f"{p50 / _ms(client):>6.2f} {r['startup']:>7.1f} "
              f"{100 * r['probes_run'] / (2 * n):>6.1f}  {'yes' if ok else 'NO'}",
              flush=True)
        print(f"  one-shot gzip of the {len(r['body']) / 1000:.0f} KB body: "
              f"{gzip_levels(r['body'])}", flush=True)
    print("scrape ms columns: p50/p99/max ours; static and client: p50 of the floors "
          "(ratio: ours p50 / floor p50); ran %: probes that had sent a request when "
          "scraping began")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
