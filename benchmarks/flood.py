"""Authenticated scrapes while N idle TCP connections are held open against the exporter.

Starts the real command line (``python -m exporter --demo`` with a web config
that asks for basic auth) as a subprocess, measures a floor, then floods it:

1. floor: ``--scrapes`` authenticated ``/metrics`` scrapes, each on a new
   connection, with no other connection open;
2. flood: ``--connections`` TCP connections that connect and send nothing,
   kept open the way an attacker would keep them: each one the exporter
   closes (its request-head deadline) is opened again at once;
3. quiet window (``--window`` seconds, flood held, no scrapes): the exporter's
   CPU share (``utime + stime`` from ``/proc/PID/stat`` over wall time, as a
   fraction of one core) and its thread count (``Threads`` in
   ``/proc/PID/status``, sampled every 0.2 s), RSS, reconnects per second;
4. the same scrapes again, flood still held; then the ratio to the floor.

Target (issue "hostile input"): with 2,000 idle connections, an
authenticated scrape answers in under 2 s, the exporter keeps at most ~64
threads, and its CPU stays near idle.

    python -m benchmarks.flood                       # 2,000 idle connections
    python -m benchmarks.flood --connections 5000
    python -m benchmarks.flood --quick               # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import httpx

from benchmarks._common import cpu_seconds, machine, percentile, proc_status, status_mib
from tests.scripted import free_port

TARGET_P99_S = 2.0
TARGET_THREADS = 64
USER = "prometheus"


@dataclass
class Sampler:
    """Thread count and CPU time of a process over a window."""

    pid: int
    threads: list[int] = field(default_factory=list)

    def window(self, seconds: float) -> float:
        """Sample for ``seconds``; return the CPU share (1.0 = one core busy)."""
        cpu0, wall0 = cpu_seconds(self.pid), time.monotonic()
        end = wall0 + seconds
        while time.monotonic() < end:
            self.threads.append(proc_status("Threads", self.pid))
            time.sleep(0.2)
        return (cpu_seconds(self.pid) - cpu0) / (time.monotonic() - wall0)


class Flood:
    """N connections that send nothing, re-opened as soon as the server closes one."""

    def __init__(self, port: int, n: int) -> None:
        self.port, self.n = port, n
        self.connects = 0
        self.open = 0
        self.failed = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: list[asyncio.Task[None]] = []

    async def _hold(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                self.failed += 1
                await asyncio.sleep(0.1)
                continue
            self.connects += 1
            self.open += 1
            try:
                await reader.read(1)  # returns (or raises) when the exporter closes it
            except OSError:
                pass
            finally:
                self.open -= 1
                writer.transport.abort()

    async def _open(self) -> None:
        for i in range(self.n):
            self._tasks.append(asyncio.ensure_future(self._hold()))
            if i % 100 == 99:  # in steps, as a kernel backlog would take them
                await asyncio.sleep(0.01)

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(60)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def _scrapes(url: str, password: str, count: int) -> tuple[list[float], str]:
    """``count`` scrapes, each on a new connection; (seconds each, the last body)."""
    times: list[float] = []
    body = ""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(auth=(USER, password), timeout=30, limits=limits) as client:
        for _ in range(count):
            started = time.perf_counter()
            resp = client.get(url)
            times.append(time.perf_counter() - started)
            if resp.status_code != 200:
                raise RuntimeError(f"scrape answered {resp.status_code}")
            body = resp.text
    return times, body


def _metric(body: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", body, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


@contextmanager
def _exporter(port: int, workdir: Path, password: str) -> Iterator[subprocess.Popen[bytes]]:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    web = workdir / "web.yml"
    web.write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
    log = (workdir / "exporter.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--log.level", "warning",
         "--web.listen-address", f"127.0.0.1:{port}", "--web.config.file", str(web)],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _wait_ready(url: str, password: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the exporter exited with {proc.returncode}")
        try:
            if httpx.get(url, auth=(USER, password), timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the exporter was not ready within {timeout}s")


def run(connections: int, scrapes: int, window: float) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft < connections + 256:
        print(f"the open-files limit ({soft}) is too low for {connections} connections; "
              "raise the hard limit (ulimit -Hn)", file=sys.stderr)
        return 2
    port = free_port()
    password = secrets.token_urlsafe(16)
    base = f"http://127.0.0.1:{port}"
    print(f"flood  {machine()} load={os.getloadavg()[0]:.2f}")
    print(f"exporter: python -m exporter --demo --web.config.file <basic auth, bcrypt cost 10>; "
          f"{connections} idle connections; {scrapes} scrapes per phase, each on a new "
          "connection")
    with tempfile.TemporaryDirectory() as tmp, _exporter(port, Path(tmp), password) as proc:
        _wait_ready(f"{base}/-/ready", password, proc, 60)
        sampler = Sampler(proc.pid)
        baseline_cpu = sampler.window(window)
        baseline_threads = max(sampler.threads)
        baseline_rss = status_mib("VmRSS", proc.pid)
        floor, _ = _scrapes(f"{base}/metrics", password, scrapes)

        flood = Flood(port, connections)
        flood.start()
        try:
            deadline = time.monotonic() + 60
            while flood.open < connections and time.monotonic() < deadline:
                time.sleep(0.1)
            if flood.open < connections:
                raise RuntimeError(f"only {flood.open} of {connections} connections opened")
            sampler.threads.clear()
            connects0 = flood.connects
            flood_cpu = sampler.window(window)
            reconnects = (flood.connects - connects0) / window
            rss = status_mib("VmRSS", proc.pid)
            flooded, body = _scrapes(f"{base}/metrics", password, scrapes)
            held_threads = max([*sampler.threads, proc_status("Threads", proc.pid)])
        finally:
            flood.stop()
    held = _metric(body, "oauth_exporter_http_connections_open")
    shed = _metric(body, "oauth_exporter_http_connections_shed_total")

    def row(name: str, times: list[float]) -> str:
        return (f"{name:<28} {percentile(times, 50) * 1000:>8.1f} "
                f"{percentile(times, 99) * 1000:>8.1f} {max(times) * 1000:>8.1f}")

    print(f"{'authenticated scrape, ms':<28} {'p50':>8} {'p99':>8} {'max':>8}")
    print(row("no other connection", floor))
    print(row(f"{connections} idle connections", flooded))
    ratio50 = percentile(flooded, 50) / percentile(floor, 50)
    ratio99 = percentile(flooded, 99) / percentile(floor, 99)
    print(f"ratio flood/floor: p50 {ratio50:.2f}, p99 {ratio99:.2f}")
    print(f"exporter threads: {baseline_threads} before the flood, at most {held_threads} "
          f"during it (target <= {TARGET_THREADS})")
    print(f"exporter CPU share of one core over {window:g}s: {baseline_cpu:.1%} before the "
          f"flood, {flood_cpu:.1%} holding it (flood client re-opening "
          f"{reconnects:.0f} connections/s as the head deadline closes them)")
    print(f"exporter RSS: {baseline_rss:.1f} MiB before the flood, {rss:.1f} MiB holding "
          f"it; connections open at the last "
          f"scrape: {held:.0f}; shed at the cap: {shed:.0f}; connect failures: {flood.failed}")
    p99 = percentile(flooded, 99)
    ok = p99 < TARGET_P99_S and held_threads <= TARGET_THREADS
    print(f"target p99 < {TARGET_P99_S:g} s and <= {TARGET_THREADS} threads: "
          f"{'met' if ok else 'NOT met'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flood",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000,
                        help="idle connections to hold open (default 2000)")
    parser.add_argument("--scrapes", type=int, default=200,
                        help="authenticated scrapes timed per phase (default 200)")
    parser.add_argument("--window", type=float, default=10.0,
                        help="seconds over which CPU and threads are sampled (default 10)")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.connections, args.scrapes, args.window = 100, 10, 1.0
    return run(args.connections, args.scrapes, args.window)


if __name__ == "__main__":
    raise SystemExit(main())
