"""Capacity of the real command line, with floors for the same work in the same run.

For each size N (credentials x 2 probes every 30 s) the script runs the real
command line (``python -m exporter --config.file ...``, a subprocess) against
the simulator (its own processes), and measures:

* **time to ready**: from starting the process until ``/-/ready`` answers 200;
* **first-minute failures**: probe failures by class in the 60 s after ready
  (``oauth_probe_failures_total``, read at ready and 60 s later), probes
  that had not run once by then, and token request failures from the start
  to the end of that minute (``oauth_token_refresh_failures_total``);
  against a healthy simulator every one of these is a defect (no
  ``no_token``, no ``timeout``);
* then, in the steady state (every probe started and a full interval gone by),
  for ``--duration`` seconds: **CPU share** of the exporter process
  (``utime + stime`` from ``/proc/PID/stat`` over wall time; 100 % is one
  core) and CPU per probe run, **RSS** (``VmRSS``; ``VmHWM`` the peak),
  **schedule lag** p50/p99 (how late each probe run started against its
  planned time, written by the exporter itself when
  ``TOKEN_EXPORTER_DEBUG_SCHEDULE_LAG_FILE`` is set) and **scrape time**
  p50/p99 (a scraper process GETs ``/metrics`` every 15 s with Prometheus'
  ``Accept`` header and ``Accept-Encoding: gzip``; until the last byte).

Floors, after the exporter has stopped, against the same simulator:

* ``httpx``: a bare asyncio loop (one task per probe, one shared
  ``httpx.AsyncClient``, the same event loop as the exporter) doing the same
  probes at the same rate with one token per credential, and nothing else:
  its CPU per probe, RSS and lag, and the time to take N tokens;
* ``blackbox``: ``prometheus-blackbox-exporter`` doing one HTTP probe per
  target at the same rate, driven by a scraper process (a new connection per
  probe, as blackbox_exporter does; one fixed bearer token per kind, since it
  cannot hold one per credential): its CPU per probe and RSS;
* ``static``: the exporter's last ``/metrics`` body served as bytes by a
  plain HTTP server (``benchmarks.scrape``), scraped the same way.

Each figure is printed with its ratio to the floor. With ``--shards K`` the
size is also run as K exporter processes (``--shard i --total-shards K``),
each scraped; CPU and RSS are then per process (the largest) and the lag is
over all runs. The simulator runs in ``--sim-processes`` processes (default
2): at 10,000 credentials one Python process serving 667 requests a second
is itself the bottleneck on this kind of machine.

    python -m benchmarks.capacity                               # 1k, 2k, 5k, 10k
    python -m benchmarks.capacity --sizes 5000
    python -m benchmarks.capacity --sizes 10000 --shards 2      # sharded
    python -m benchmarks.capacity --sizes 2000 --asyncio        # without uvloop
    python -m benchmarks.capacity --quick                       # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import (
    PROBES,
    UNLIMITED_KINDS,
    add_sizes_argument,
    config_yaml,
    cpu_seconds,
    credential,
    kind_of,
    machine,
    median,
    percentile,
    simulator_group,
    status_mib,
)
from benchmarks.scrape import HEADERS as SCRAPE_HEADERS
from benchmarks.scrape import _serve_static, measure_floor
from exporter.app import STARTS_PER_SECOND
from exporter.cli import event_loop_factory
from exporter.laglog import ENV as LAG_FILE_ENV
from exporter.laglog import read_lag_file
from exporter.simulator import TOKEN_PATHS
from tests.scripted import free_port

DEFAULT_SIZES = (1000, 2000, 5000, 10000)
TARGET_LAG_P99 = 1.0
TARGET_CPU_MS = 1.0
ROOT = Path(__file__).resolve().parent.parent
BLACKBOX = "prometheus-blackbox-exporter"
#: Runs the command line with uvloop made unimportable (``--asyncio``).
NO_UVLOOP = ("import sys; sys.modules['uvloop'] = None; "
             "from exporter.cli import main; raise SystemExit(main())")


# --------------------------------------------------------------------------- /proc


def load() -> float:
    return os.getloadavg()[0]


def event_loop(asyncio_only: bool) -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """The loop the exporter would pick (uvloop where installed) for the floors."""
    return (None, "asyncio") if asyncio_only else event_loop_factory()


# --------------------------------------------------------------------------- scraper process


def _scraper(conn: multiprocessing.connection.Connection, urls: list[str], interval: float,
             max_seconds: float) -> None:
    """Child process: GET each URL every ``interval`` s, as Prometheus would, until told
    to stop; report ``(wall time, seconds, ok)`` per scrape."""
    results: list[tuple[float, float, bool]] = []
    deadline = time.monotonic() + max_seconds
    with httpx.Client(headers=SCRAPE_HEADERS, timeout=60, trust_env=False) as client:
        while time.monotonic() < deadline:
            started = time.monotonic()
            for url in urls:
                at, t0 = time.time(), time.perf_counter()
                ok = True
                try:
                    with client.stream("GET", url) as response:
                        for _ in response.iter_raw():
                            pass
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                results.append((at, time.perf_counter() - t0, ok))
            if conn.poll(max(0.0, interval - (time.monotonic() - started))):
                break
    conn.send(results)


@dataclass
class Scraper:
    proc: Any
    conn: multiprocessing.connection.Connection

    @classmethod
    def start(cls, urls: list[str], interval: float, max_seconds: float) -> Scraper:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_scraper, args=(child, urls, interval, max_seconds),
                           daemon=True, name="scraper")
        proc.start()
        return cls(proc, parent)

    def stop(self) -> list[tuple[float, float, bool]]:
        self.conn.send("stop")
        results: list[tuple[float, float, bool]] = (
            self.conn.recv() if self.conn.poll(120) else [])
        self.proc.join(10)
        return results


# --------------------------------------------------------------------------- the exporter


@dataclass
class Shard:
    proc: subprocess.Popen[bytes]
    port: int
    lag_path: Path
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_exporters(config: Path, shards: int, tmp: Path, asyncio_only: bool,
                    source: Path = ROOT, extra: Sequence[str] = ()) -> list[Shard]:
    started = []
    for i in range(shards):
        port = free_port()
        lag, log = tmp / f"lag-{i}.txt", tmp / f"exporter-{i}.log"
        head = [sys.executable, "-c", NO_UVLOOP] if asyncio_only else [
            sys.executable, "-m", "exporter"]
        cmd = [*head, "--config.file", str(config),
               "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "info", *extra]
        if shards > 1:
            cmd += ["--shard", str(i), "--total-shards", str(shards)]
        env = {**os.environ, "PYTHONPATH": str(source), LAG_FILE_ENV: str(lag)}
        out = log.open("wb")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=source)
        out.close()
        started.append(Shard(proc, port, lag, log))
    return started


def stop_exporters(shards: list[Shard]) -> None:
    for shard in shards:
        if shard.proc.poll() is None:
            shard.proc.terminate()
    for shard in shards:
        try:
            shard.proc.wait(30)
        except subprocess.TimeoutExpired:
            shard.proc.kill()
            shard.proc.wait()


def wait_ready(shards: list[Shard], started: float, timeout: float) -> float:
    """Seconds from ``started`` until every shard's ``/-/ready`` answers 200."""
    pending = list(shards)
    ready_at = started
    with httpx.Client(timeout=5, trust_env=False) as client:
        while pending:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"not ready within {timeout:g} s")
            for shard in list(pending):
                if shard.proc.poll() is not None:
                    raise RuntimeError(f"exporter exited with {shard.proc.returncode}:\n"
                                       + shard.log_path.read_text()[-3000:])
                with suppress(httpx.HTTPError):
                    if client.get(shard.base + "/-/ready").status_code == 200:
                        pending.remove(shard)
                        ready_at = time.monotonic()
            if pending:
                time.sleep(0.1)
    return ready_at - started


_FAILURE = re.compile(r'^oauth_probe_failures_total\{(.*)\} (\S+)$', re.MULTILINE)
_TOKEN_FAILURE = re.compile(r'^oauth_token_refresh_failures_total\{(.*)\} (\S+)$',
                            re.MULTILINE)
_ATTEMPTS = re.compile(r'^oauth_probe_attempts_total\{(.*)\} (\S+)$', re.MULTILINE)
_ERROR = re.compile(r'error="([^"]*)"')
_WHO = re.compile(r'(?:probe|provider)="[^"]*"')


@dataclass
class Counts:
    failures: dict[str, float] = field(default_factory=dict)
    #: probes that have neither sent a request nor failed
    unrun: int = 0
    #: requests sent by all probes
    attempts: float = 0.0
    #: failed token requests by class since the start
    token_failures: dict[str, int] = field(default_factory=dict)

    def minus(self, other: Counts) -> dict[str, int]:
        return {k: int(v - other.failures.get(k, 0)) for k, v in sorted(self.failures.items())
                if v - other.failures.get(k, 0) > 0}


def probe_counts(shards: list[Shard]) -> Counts:
    counts = Counts()
    with httpx.Client(timeout=180, trust_env=False,
                      headers={"Accept": "text/plain;version=0.0.4"}) as client:
        for shard in shards:
            text = client.get(shard.base + "/metrics").text
            failed: set[tuple[str, ...]] = set()
            for labels, value in _FAILURE.findall(text):
                error = _ERROR.search(labels)
                if error is not None:
                    counts.failures[error[1]] = counts.failures.get(error[1], 0) + float(value)
                    failed.add(tuple(_WHO.findall(labels)))
            for labels, value in _TOKEN_FAILURE.findall(text):
                error = _ERROR.search(labels)
                if error is not None:
                    counts.token_failures[error[1]] = (
                        counts.token_failures.get(error[1], 0) + int(float(value)))
            for labels, value in _ATTEMPTS.findall(text):
                counts.attempts += float(value)
                if float(value) == 0 and tuple(_WHO.findall(labels)) not in failed:
                    counts.unrun += 1
    return counts


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.monotonic()))


def run_exporter(n: int, shards: int, base_urls: dict[str, str], opts: argparse.Namespace,
                 tmp: Path) -> dict[str, Any]:
    config = tmp / "providers.yaml"
    config.write_text(config_yaml(n, base_urls, UNLIMITED_KINDS, probe_interval=opts.interval),
                      encoding="utf-8")
    started = time.monotonic()
    procs = start_exporters(config, shards, tmp, opts.asyncio, opts.exporter_source,
                            opts.exporter_arg)
    scraper: Scraper | None = None
    try:
        ready = wait_ready(procs, started, opts.startup_timeout)
        ready_at = started + ready
        at_ready = probe_counts(procs)
        scraper = Scraper.start([s.base + "/metrics" for s in procs], opts.scrape_interval,
                                opts.first_minute + opts.duration + 3 * opts.interval + 600)
        _sleep_until(ready_at + opts.first_minute)
        after_minute = probe_counts(procs)
        # Steady state: every probe started (paced), then a whole interval.
        spread = 2 * n / shards / STARTS_PER_SECOND
        _sleep_until(max(time.monotonic(), started + ready + spread + opts.interval))
        before = probe_counts(procs)
        load_from, wall_from = load(), time.time()
        cpu_from = [cpu_seconds(s.proc.pid) for s in procs]
        t_from = time.monotonic()
        time.sleep(opts.duration)
        cpu_to = [cpu_seconds(s.proc.pid) for s in procs]
        elapsed = time.monotonic() - t_from
        wall_to, load_to = time.time(), load()
        after = probe_counts(procs)
        rss = [status_mib("VmRSS", s.proc.pid) for s in procs]
        hwm = [status_mib("VmHWM", s.proc.pid) for s in procs]
        scrapes = scraper.stop()
        scraper = None
        with httpx.Client(headers=SCRAPE_HEADERS, timeout=60, trust_env=False) as client:
            last = client.get(procs[0].base + "/metrics")
            raw = gzip.compress(last.content, compresslevel=1)
            content_type = last.headers["content-type"]
    except BaseException:
        for shard in procs:
            with suppress(OSError):
                print(f"{shard.log_path.name}, last lines:\n"
                      + "\n".join(shard.log_path.read_text().splitlines()[-20:]),
                      file=sys.stderr)
        raise
    finally:
        if scraper is not None:
            scraper.stop()
        stop_exporters(procs)
        if opts.keep_logs is not None:
            opts.keep_logs.mkdir(parents=True, exist_ok=True)
            for shard in procs:
                shutil.copy(shard.log_path, opts.keep_logs / f"{n}-{shard.log_path.name}")
    lags = [lag for s in procs if s.lag_path.exists()
            for at, lag in read_lag_file(str(s.lag_path)) if wall_from <= at < wall_to]
    window = [t for at, t, ok in scrapes if wall_from - opts.scrape_interval <= at < wall_to]
    failed_scrapes = sum(1 for at, _, ok in scrapes if not ok)
    shares = [(b - a) / elapsed for a, b in zip(cpu_from, cpu_to, strict=True)]
    # Requests sent, from the exporter's own counter (the lag file has one line
    # per run too, but only where the exporter has it: --exporter-source).
    runs = int(after.attempts - before.attempts)
    return {
        "ready": ready,
        "first_minute": after_minute.minus(at_ready),
        "unrun": after_minute.unrun,
        "token_failures": dict(sorted(after_minute.token_failures.items())),
        "cpu_share": max(shares),
        "cpu_total": sum(shares),
        "cpu_ms_per_probe": 1000 * sum(b - a for a, b in zip(cpu_from, cpu_to, strict=True))
        / max(runs, 1),
        "runs_per_s": runs / elapsed,
        "rss": max(rss),
        "hwm": max(hwm),
        "lag_runs": len(lags),
        "lag_p50": percentile(lags, 50),
        "lag_p99": percentile(lags, 99),
        "lag_max": max(lags, default=float("nan")),
        "scrape_p50": median(window) if window else float("nan"),
        "scrape_p99": percentile(window, 99),
        "scrapes": len(window),
        "failed_scrapes": failed_scrapes,
        "load": (load_from, load_to),
        "raw": raw,
        "content_type": content_type,
    }


# --------------------------------------------------------------------------- tokens (floors)


def _token_request(kind: str, base: str, client_id: str, secret: str) -> dict[str, Any]:
    """The arguments of one plain client-credentials request to a simulated ``kind``."""
    data = {"grant_type": "client_credentials"}
    auth: tuple[str, str] | None = None
    if kind == "simplifi":  # client_secret_basic
        auth = (client_id, secret)
    else:
        data |= {"client_id": client_id, "client_secret": secret}
    if kind == "smartdocumentor":
        data["scope"] = "WebAPI"
    return {"url": base + TOKEN_PATHS[kind], "data": data, "auth": auth}


def _probe_headers(kind: str, auth: str, token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if kind == "dokstamp":
        headers["X-Tenant"] = "bench"
    if auth == "bearer" and token is not None:
        headers["Authorization"] = "Bearer " + token
    return headers


# --------------------------------------------------------------------------- floor: bare httpx


async def _httpx_floor_run(n: int, base_urls: dict[str, str], interval: float,
                           duration: float, first_minute: float) -> dict[str, Any]:
    # One client per host, its pool as large as the exporter's per host: one
    # client for all hosts, with room for every request at once, spends its time
    # in httpcore's pool bookkeeping (exporter/http.py, HostPools) and never
    # keeps the schedule at 2,000 credentials.
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    clients = {kind: httpx.AsyncClient(limits=limits, timeout=10, trust_env=False)
               for kind in base_urls}
    try:
        return await _httpx_floor_measure(n, base_urls, interval, duration, first_minute,
                                          clients)
    finally:
        for client in clients.values():
            await client.aclose()


async def _httpx_floor_measure(n: int, base_urls: dict[str, str], interval: float,
                               duration: float, first_minute: float,
                               clients: dict[str, httpx.AsyncClient]) -> dict[str, Any]:
    gate = asyncio.Semaphore(100)

    async def take(i: int) -> str:
        kind = kind_of(i, UNLIMITED_KINDS)
        _, client_id, secret = credential(i)
        request = _token_request(kind, base_urls[kind], client_id, secret)
        async with gate:
            response = await clients[kind].post(request["url"], data=request["data"],
                                                auth=request["auth"])
        token: str = response.raise_for_status().json()["access_token"]
        return token

    t0 = time.monotonic()
    tokens = await asyncio.gather(*(take(i) for i in range(n)))
    ready = time.monotonic() - t0

    probes = []
    for i in range(n):
        kind = kind_of(i, UNLIMITED_KINDS)
        for _, method, path, auth in PROBES[kind]:
            probes.append((clients[kind], method, base_urls[kind] + path,
                           _probe_headers(kind, auth, tokens[i])))
    lags: list[tuple[float, float]] = []
    failures: dict[str, int] = {}
    start = time.time() + 0.5

    async def run(j: int, client: httpx.AsyncClient, method: str, url: str,
                  headers: dict[str, str]) -> None:
        planned = start + interval * j / len(probes)
        while True:
            await asyncio.sleep(max(0.0, planned - time.time()))
            now = time.time()
            lags.append((now, now - planned))
            try:
                response = await client.request(method, url, headers=headers)
                if response.status_code != 200:
                    failures["status"] = failures.get("status", 0) + 1
            except httpx.TimeoutException:
                failures["timeout"] = failures.get("timeout", 0) + 1
            except httpx.HTTPError:
                failures["connection_error"] = failures.get("connection_error", 0) + 1
            planned += interval

    tasks = [asyncio.create_task(run(j, *p)) for j, p in enumerate(probes)]
    await asyncio.sleep(max(interval, first_minute) + 0.5)
    first = dict(failures)
    cpu0, w0, t_from = cpu_seconds(os.getpid()), time.time(), time.monotonic()
    await asyncio.sleep(duration)
    cpu1, w1, elapsed = cpu_seconds(os.getpid()), time.time(), time.monotonic() - t_from
    rss = status_mib("VmRSS")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    window = [lag for at, lag in lags if w0 <= at < w1]
    return {
        "ready": ready,
        "first_minute": first,
        "cpu_share": (cpu1 - cpu0) / elapsed,
        "cpu_ms_per_probe": 1000 * (cpu1 - cpu0) / max(len(window), 1),
        "rss": rss,
        "lag_p50": percentile(window, 50),
        "lag_p99": percentile(window, 99),
        "runs_per_s": len(window) / elapsed,
    }


def _httpx_floor(conn: multiprocessing.connection.Connection, n: int,
                 base_urls: dict[str, str], interval: float, duration: float,
                 first_minute: float, asyncio_only: bool) -> None:
    factory, _ = event_loop(asyncio_only)
    with asyncio.Runner(loop_factory=factory) as runner:
        conn.send(runner.run(_httpx_floor_run(n, base_urls, interval, duration, first_minute)))


def run_httpx_floor(n: int, base_urls: dict[str, str], opts: argparse.Namespace
                    ) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_httpx_floor, daemon=True, name="httpx-floor",
                       args=(child, n, base_urls, opts.interval, opts.floor_duration,
                             opts.floor_warmup, opts.asyncio))
    proc.start()
    try:
        if not parent.poll(opts.startup_timeout + opts.floor_warmup + opts.floor_duration
                           + opts.interval + 60):
            raise TimeoutError("httpx floor did not finish")
        result: dict[str, Any] = parent.recv()
        return result
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.terminate()


# --------------------------------------------------------------------------- floor: blackbox


def _blackbox_config(base_urls: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
    """blackbox.yml with one module per (kind, probe), and its (module, target) pairs
    for one credential of each kind, in ``PROBES`` order."""
    lines = ["modules:"]
    targets: list[tuple[str, str]] = []
    with httpx.Client(timeout=10, trust_env=False) as client:
        for k, kind in enumerate(UNLIMITED_KINDS):
            _, client_id, secret = credential(k)
            request = _token_request(kind, base_urls[kind], client_id, secret)
            token = client.post(request["url"], data=request["data"],
                                auth=request["auth"]).raise_for_status().json()["access_token"]
            for p, (_, method, path, auth) in enumerate(PROBES[kind]):
                module = f"{kind}_{p}"
                lines += [f"  {module}:", "    prober: http", "    timeout: 10s", "    http:",
                          f"      method: {method}", "      valid_status_codes: [200]",
                          "      preferred_ip_protocol: ip4", "      headers:"]
                lines += [f"        {key}: {value!r}"
                          for key, value in _probe_headers(kind, auth, token).items()]
                targets.append((module, base_urls[kind] + path))
    return "\n".join(lines) + "\n", targets


#: Targets one driver process sends to blackbox_exporter: one Python process
#: does not send much more than 300 requests a second, so larger sizes are
#: driven by several.
DRIVER_TARGETS = 2000


def _blackbox_driver(conn: multiprocessing.connection.Connection, port: int,
                     targets: list[tuple[str, str]], first: int, of: int,
                     interval: float, total: float, asyncio_only: bool) -> None:
    """Child process: GET blackbox's /probe for every target once per interval.

    ``targets`` are numbers ``first`` on of ``of`` in all: each is planned at
    its place in the whole interval, as if one driver sent them all.
    """

    async def drive() -> dict[str, int]:
        counts = {"probes": 0, "failed": 0}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
            start = time.time() + 0.2
            end = start + total

            async def one(j: int, module: str, target: str) -> None:
                planned = start + interval * (first + j) / of
                while planned < end:
                    await asyncio.sleep(max(0.0, planned - time.time()))
                    if time.time() >= end:
                        # Fallen a whole window behind: a probe that was due
                        # and never sent is a failed one, and the driver ends
                        # on time instead of working off its backlog.
                        counts["probes"] += 1
                        counts["failed"] += 1
                        planned += interval
                        continue
                    try:
                        response = await client.get(
                            f"http://127.0.0.1:{port}/probe",
                            params={"module": module, "target": target})
                        ok = b"\nprobe_success 1" in response.content
                    except httpx.HTTPError:
                        ok = False
                    counts["probes"] += 1
                    counts["failed"] += not ok
                    planned += interval

            await asyncio.gather(*(one(j, *t) for j, t in enumerate(targets)))
        return counts

    factory, _ = event_loop(asyncio_only)
    with asyncio.Runner(loop_factory=factory) as runner:
        conn.send(runner.run(drive()))


def run_blackbox_floor(n: int, base_urls: dict[str, str], opts: argparse.Namespace,
                       tmp: Path) -> dict[str, Any]:
    binary = shutil.which(BLACKBOX)
    if binary is None:
        raise SystemExit(f"{BLACKBOX} not found: install the Debian package "
                         f"prometheus-blackbox-exporter, or pass --no-blackbox")
    text, per_kind = _blackbox_config(base_urls)
    config = tmp / "blackbox.yml"
    config.write_text(text, encoding="utf-8")
    targets = []
    for i in range(n):
        k = UNLIMITED_KINDS.index(kind_of(i, UNLIMITED_KINDS))
        targets += per_kind[2 * k: 2 * k + 2]
    port = free_port()
    log = (tmp / "blackbox.log").open("wb")
    proc = subprocess.Popen([binary, f"--config.file={config}",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    ctx = multiprocessing.get_context("spawn")
    pipes: list[multiprocessing.connection.Connection] = []
    drivers: list[multiprocessing.process.BaseProcess] = []
    try:
        with httpx.Client(timeout=5, trust_env=False) as client:
            deadline = time.monotonic() + 30
            while True:
                with suppress(httpx.HTTPError):
                    if client.get(f"http://127.0.0.1:{port}/-/healthy").status_code == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("blackbox_exporter did not start")
                time.sleep(0.1)
        warm = max(opts.interval, opts.floor_warmup)
        for first in range(0, len(targets), DRIVER_TARGETS):
            parent, child = ctx.Pipe()
            pipes.append(parent)
            drivers.append(ctx.Process(
                target=_blackbox_driver, daemon=True, name=f"blackbox-driver-{first}",
                args=(child, port, targets[first:first + DRIVER_TARGETS], first, len(targets),
                      opts.interval, warm + opts.floor_duration + 1, opts.asyncio)))
            drivers[-1].start()
        time.sleep(warm + 0.2)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(opts.floor_duration)
        cpu1, elapsed = cpu_seconds(proc.pid), time.monotonic() - t0
        rss = status_mib("VmRSS", proc.pid)
        counts = {"probes": 0, "failed": 0}
        for parent in pipes:
            if not parent.poll(opts.interval + 120):
                raise TimeoutError("a blackbox driver did not finish")
            for key, value in parent.recv().items():
                counts[key] += value
    finally:
        for driver in drivers:
            driver.join(10)
            if driver.is_alive():
                driver.terminate()
        proc.terminate()
        proc.wait(10)
    runs_per_s = 2 * n / opts.interval
    return {
        "cpu_share": (cpu1 - cpu0) / elapsed,
        # The driver keeps the schedule only as well as blackbox answers; count at
        # the planned rate, and report what was answered as failures.
        "cpu_ms_per_probe": 1000 * (cpu1 - cpu0) / (runs_per_s * elapsed),
        "rss": rss,
        "probes": counts["probes"],
        "failed": counts["failed"],
    }


# --------------------------------------------------------------------------- report


def _ratio(ours: float, floor: float | None) -> str:
    if floor is None or floor != floor or floor <= 0 or ours != ours:
        return "-"
    return f"{ours / floor:.1f}x"


def _failures(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def report(n: int, shards: int, r: dict[str, Any], hx: dict[str, Any] | None,
           bb: dict[str, Any] | None, static: list[float] | None,
           opts: argparse.Namespace) -> str:
    ms = 1000.0
    lines = [f"--- {n} credentials x 2 probes every {opts.interval:g} s, "
             f"{shards} exporter process{'es' if shards > 1 else ''}; "
             f"load {r['load'][0]:.2f} at the start of the window, {r['load'][1]:.2f} at its end"]
    cpu = r["cpu_share"] * 100
    per_probe = r["cpu_ms_per_probe"]
    lines.append(f"  CPU share      {cpu:6.1f} % of a core"
                 + (f" per process ({r['cpu_total'] * 100:.1f} % in all)" if shards > 1 else "")
                 + f"; {per_probe:.2f} ms per probe run ({r['runs_per_s']:.0f} runs/s)"
                 + (f"; httpx floor {hx['cpu_ms_per_probe']:.2f} ms "
                    f"({_ratio(per_probe, hx['cpu_ms_per_probe'])})" if hx else "")
                 + (f"; blackbox {bb['cpu_ms_per_probe']:.2f} ms "
                    f"({_ratio(per_probe, bb['cpu_ms_per_probe'])})" if bb else ""))
    lines.append(f"  RSS            {r['rss']:6.1f} MiB (peak {r['hwm']:.1f})"
                 + (f"; httpx floor {hx['rss']:.1f} ({_ratio(r['rss'], hx['rss'])})"
                    if hx else "")
                 + (f"; blackbox {bb['rss']:.1f} ({_ratio(r['rss'], bb['rss'])})" if bb else ""))
    lines.append(f"  schedule lag   p50 {r['lag_p50'] * ms:.1f} ms, p99 {r['lag_p99'] * ms:.1f} ms,"
                 f" max {r['lag_max'] * ms:.1f} ms"
                 + (f"; httpx floor p50 {hx['lag_p50'] * ms:.1f} ms, p99 {hx['lag_p99'] * ms:.1f}"
                    f" ms ({_ratio(r['lag_p99'], hx['lag_p99'])} at p99)" if hx else ""))
    static_p50 = median(static) if static else None
    lines.append(f"  scrape         p50 {r['scrape_p50'] * ms:.1f} ms, p99 "
                 f"{r['scrape_p99'] * ms:.1f} ms ({r['scrapes']} scrapes"
                 f"{', ' + str(r['failed_scrapes']) + ' failed' if r['failed_scrapes'] else ''})"
                 + (f"; static-bytes floor p50 {static_p50 * ms:.1f} ms "
                    f"({_ratio(r['scrape_p50'], static_p50)})" if static_p50 else ""))
    lines.append(f"  ready after    {r['ready']:.1f} s"
                 + (f"; httpx floor takes {n} tokens in {hx['ready']:.1f} s "
                    f"({_ratio(r['ready'], hx['ready'])})" if hx else ""))
    lines.append(f"  first minute   probe failures: {_failures(r['first_minute'])}; probes not "
                 f"run once: {r['unrun']}; token failures since the start: "
                 f"{_failures(r['token_failures'])}"
                 + (f"; httpx floor failures: {_failures(hx['first_minute'])}" if hx else "")
                 + (f"; blackbox failed probes: {bb['failed']} of {bb['probes']}" if bb else ""))
    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    clean = not r["first_minute"] and not r["unrun"] and not r["token_failures"]

    lines.append(f"  targets        lag p99 < {TARGET_LAG_P99:g} s: "
                 f"{verdict(r['lag_p99'] < TARGET_LAG_P99)}; "
                 f"a clean start: {verdict(clean)}; "
                 f"<= {TARGET_CPU_MS:g} ms per probe: {verdict(per_probe <= TARGET_CPU_MS)}"
                 + (f"; at most the httpx floor's CPU per probe: "
                    f"{verdict(per_probe <= hx['cpu_ms_per_probe'])}" if hx else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.capacity",
                                     description=__doc__.split("\n\n")[0])
    add_sizes_argument(parser, DEFAULT_SIZES)
    parser.add_argument("--shards", type=int, default=1,
                        help="exporter processes per size (--shard/--total-shards)")
    parser.add_argument("--interval", type=float, default=30.0, help="probe interval (s)")
    parser.add_argument("--duration", type=float, default=90.0,
                        help="steady-state seconds measured per size")
    parser.add_argument("--first-minute", type=float, default=60.0,
                        help="seconds after ready in which failures are counted")
    parser.add_argument("--scrape-interval", type=float, default=15.0)
    parser.add_argument("--floor-duration", type=float, default=60.0)
    parser.add_argument("--floor-warmup", type=float, default=30.0)
    parser.add_argument("--floor-scrapes", type=int, default=50)
    parser.add_argument("--sim-processes", type=int, default=2)
    parser.add_argument("--startup-timeout", type=float, default=600.0)
    parser.add_argument("--asyncio", action="store_true",
                        help="run the exporter and the httpx floor without uvloop")
    parser.add_argument("--exporter-source", type=Path, default=ROOT,
                        help="run the exporter from this source tree (a before/after figure)")
    parser.add_argument("--exporter-arg", action="append", default=[], metavar="ARG",
                        help="one more argument for the exporter (repeat as needed)")
    parser.add_argument("--keep-logs", type=Path, metavar="DIR",
                        help="copy the exporters' logs into DIR")
    parser.add_argument("--no-floors", action="store_true", help="skip every floor")
    parser.add_argument("--no-blackbox", action="store_true", help="skip the blackbox floor")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.interval, args.duration, args.first_minute = [20], 2.0, 3.0, 3.0
        args.scrape_interval, args.floor_duration, args.floor_warmup = 1.0, 2.0, 2.0
        args.floor_scrapes, args.startup_timeout = 5, 60.0

    _, loop_name = event_loop(args.asyncio)
    print(f"capacity  {machine()} load={load():.2f} loop={loop_name}", flush=True)
    print(f"2 probes per credential every {args.interval:g} s; {args.duration:g} s of steady "
          f"state per size; /metrics scraped every {args.scrape_interval:g} s; "
          f"simulator in {args.sim_processes} process(es)", flush=True)
    for n in args.sizes:
        with simulator_group(n, UNLIMITED_KINDS, processes=args.sim_processes) as sim, \
                tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            r = run_exporter(n, args.shards, sim.base_urls, args, tmp)
            hx = bb = static = None
            if not args.no_floors:
                # A floor that cannot keep up is a finding, not a reason to
                # lose the exporter's figures: say so and report the rest.
                try:
                    static = measure_floor(_serve_static, (r["raw"], r["content_type"]),
                                           args.floor_scrapes)
                    hx = run_httpx_floor(n, sim.base_urls, args)
                    if not args.no_blackbox:
                        bb = run_blackbox_floor(n, sim.base_urls, args, tmp)
                except (RuntimeError, TimeoutError) as e:
                    print(f"--- {n}: a floor failed: {e}", flush=True)
            print(report(n, args.shards, r, hx, bb, static, args), flush=True)
    print("capacity: figures per size above; ratios are ours / floor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
