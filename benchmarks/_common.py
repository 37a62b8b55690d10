"""Shared helpers for the benchmark scripts: configs, the simulator process, statistics.

Nothing here is timed. The helpers build what a benchmark measures (a parsed
config with N credentials, a simulator running in its own process) and
summarise what it saw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.config import Config, parse_config
from exporter.simulator import KINDS, TOKEN_PATHS

if TYPE_CHECKING:  # the memory benchmark measures the import of exporter.app itself
    from exporter.app import Exporter

#: Simulator kinds without a token rate limit, so N credentials can start at once
#: (SimpleDocs' 10 requests/min per IP would make start-up take N/10 minutes).
UNLIMITED_KINDS: tuple[str, ...] = ("smartdocumentor", "simplifi", "simplestore", "dokstamp")

#: Every kind, for benchmarks that need no simulator (render).
ALL_KINDS: tuple[str, ...] = KINDS

#: Two probes per kind: each kind's API endpoint, plus a second request that the
#: simulator answers cheaply (HEAD, a single record, or DokStamp's public download).
PROBES: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    # name, method, path, auth
    "simpledocs": (
        ("documents", "GET", "/v1/documents", "bearer"),
        ("documents-head", "HEAD", "/v1/documents", "bearer"),
    ),
    "smartdocumentor": (
        ("templates", "GET", "/api/v1/templates", "bearer"),
        ("templates-head", "HEAD", "/api/v1/templates", "bearer"),
    ),
    "simplifi": (
        ("employees", "GET", "/api/v1/employees", "bearer"),
        ("employee", "GET", "/api/v1/employees/123", "bearer"),
    ),
    "simplestore": (
        ("products", "GET", "/api/v1/products", "bearer"),
        ("products-head", "HEAD", "/api/v1/products", "bearer"),
    ),
    "dokstamp": (
        ("documents", "GET", "/api/v1/documents", "bearer"),
        ("public-download", "GET",
         "/files/0b6f1c8e-5d1e-4c55-9a3e-2f7d1c9b8a11/download", "none"),
    ),
}


def credential(i: int) -> tuple[str, str, str]:
    """``(provider name, client id, client secret)`` of credential number ``i``."""
    # Distinct secrets, as in real use: the log redactor keeps every one.
    return f"cred-{i:05d}", f"client-{i:05d}", f"bench-secret-{i:05d}-Xq7vN2"


def kind_of(i: int, kinds: Sequence[str]) -> str:
    return kinds[i % len(kinds)]


def config_yaml(n: int, base_urls: dict[str, str], kinds: Sequence[str], *,
                probe_interval: float, defaults: dict[str, Any] | None = None) -> str:
    """A provider file with ``n`` credentials round-robin over ``kinds``, 2 probes each."""
    # The timeout must stay below the probe interval (quick runs probe every second).
    lines = ["defaults:", f"  probe_interval: {probe_interval}s",
             f"  timeout: {min(10.0, probe_interval / 2):g}s"]
    lines += [f"  {k}: {v}" for k, v in (defaults or {}).items()]
    lines.append("providers:")
    for i in range(n):
        kind = kind_of(i, kinds)
        name, client_id, secret = credential(i)
        base = base_urls[kind]
        lines += [
            f"  - name: {name}",
            f"    preset: {kind}",
            f"    token_url: {base}{TOKEN_PATHS[kind]}",
            f"    client_id: {client_id}",
            f"    client_secret: {secret}",
        ]
        if kind == "dokstamp":
            lines.append("    headers: {X-Tenant: bench}")
        if kind == "smartdocumentor":
            lines.append("    client_secret_expires_at: 2030-01-01T00:00:00Z")
        lines.append("    probes:")
        for probe, method, path, auth in PROBES[kind]:
            lines += [
                f"      - name: {probe}",
                f"        method: {method}",
                f"        url: {base}{path}",
                f"        auth: {auth}",
            ]
    return "\n".join(lines) + "\n"


def build_config(n: int, base_urls: dict[str, str], kinds: Sequence[str], *,
                 probe_interval: float, defaults: dict[str, Any] | None = None) -> Config:
    text = config_yaml(n, base_urls, kinds, probe_interval=probe_interval, defaults=defaults)
    return parse_config(text, "bench.yaml", {})


# --------------------------------------------------------------------------- simulator process


def _serve(conn: multiprocessing.connection.Connection, n: int, kinds: Sequence[str],
           lifetime: int | None, max_seconds: float,
           serve: Sequence[str] | None = None) -> None:
    """Child process: one simulator per kind (of ``serve``, default all ``kinds``)
    with that kind's credentials registered."""
    from exporter.simulator import SimulatedProvider

    sims = {kind: SimulatedProvider(kind, rate_limit=None, lifetime=lifetime).start()
            for kind in (serve or kinds)}
    try:
        for i in range(n):
            _, client_id, secret = credential(i)
            sim = sims.get(kind_of(i, kinds))
            if sim is not None:
                sim.add_client(client_id, secret)
        conn.send({kind: sim.base_url for kind, sim in sims.items()})
        # Bounded: ends on "stop", when the parent goes away, or at the deadline.
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            if not conn.poll(1.0):
                continue
            try:
                message = conn.recv()
            except EOFError:
                break
            if message == "stats":
                conn.send({
                    "token_requests": sum(s._token_request_total for s in sims.values()),
                    "api_requests": sum(s._api_request_total for s in sims.values()),
                    "issued_tokens": sum(s.issued_token_count() for s in sims.values()),
                })
            elif message == "token_log":
                conn.send([(r.client_id, r.time, r.issued)
                           for s in sims.values() for r in s.token_requests()])
            elif message == "pid":
                conn.send(os.getpid())
            elif message == "stop":
                break
    finally:
        for sim in sims.values():
            sim.stop()


@dataclass
class SimulatorProcess:
    base_urls: dict[str, str]
    _conn: multiprocessing.connection.Connection

    def _ask(self, message: str) -> Any:
        self._conn.send(message)
        if not self._conn.poll(30):
            raise TimeoutError("simulator did not answer")
        return self._conn.recv()

    def stats(self) -> dict[str, int]:
        """Totals: token_requests, issued_tokens, api_requests."""
        stats: dict[str, int] = self._ask("stats")
        return stats

    def token_log(self) -> list[tuple[str | None, float, bool]]:
        """``(client_id, time, issued)`` of every token request (the newest 10,000 per kind)."""
        log: list[tuple[str | None, float, bool]] = self._ask("token_log")
        return log


    @property
    def pid(self) -> int:
        pid: int = self._ask("pid")
        return pid


@dataclass
class SimulatorGroup:
    """Several simulator processes (one per group of kinds) seen as one."""

    processes: list[SimulatorProcess]

    @property
    def base_urls(self) -> dict[str, str]:
        return {kind: url for p in self.processes for kind, url in p.base_urls.items()}

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for p in self.processes:
            for key, value in p.stats().items():
                total[key] = total.get(key, 0) + value
        return total


@contextmanager
def simulator_group(n: int, kinds: Sequence[str] = UNLIMITED_KINDS, *, processes: int = 1,
                    lifetime: int | None = None,
                    max_seconds: float = 3600.0) -> Iterator[SimulatorGroup]:
    """The simulator in ``processes`` processes, its kinds dealt out among them, so
    that a simulator's own GIL is not what limits a large run."""
    groups = [list(kinds[i::processes]) for i in range(min(processes, len(kinds)))]
    with ExitStack() as stack:
        yield SimulatorGroup([
            stack.enter_context(simulator_process(n, kinds, lifetime=lifetime,
                                                  max_seconds=max_seconds, serve=group))
            for group in groups
        ])


@contextmanager
def simulator_process(n: int, kinds: Sequence[str] = UNLIMITED_KINDS, *,
                      lifetime: int | None = None, max_seconds: float = 3600.0,
                      serve: Sequence[str] | None = None) -> Iterator[SimulatorProcess]:
    """The simulator in its own process, so it does not compete for the exporter's GIL.

    ``serve``: the kinds this process serves (default: all of ``kinds``)."""
    # spawn: a fresh interpreter, not a fork of a process that may already run threads.
    with spawned(_serve, (n, list(kinds), lifetime, max_seconds, list(serve) if serve else None),
                 name="simulator", start_timeout=60) as (conn, base_urls):
        yield SimulatorProcess(base_urls, conn)


@contextmanager
def spawned(target: Callable[..., None], args: tuple[Any, ...], *, name: str,
            start_timeout: float, stop_timeout: float = 15.0,
            ) -> Iterator[tuple[multiprocessing.connection.Connection, Any]]:
    """Run ``target(conn, *args)`` in a process of its own (spawned, so that it
    shares no GIL with this one), and yield our end of ``conn`` with the first
    message the child sends (its port, its URLs). At the end the child is told
    "stop", and terminated if it does not."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), daemon=True, name=name)
    proc.start()
    child.close()
    try:
        if not parent.poll(start_timeout):
            raise TimeoutError(f"{name} did not start")
        yield parent, parent.recv()
    finally:
        with suppress(OSError):
            parent.send("stop")
        proc.join(stop_timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        parent.close()


# --------------------------------------------------------------------------- reporting


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest-rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine() -> str:
    """``nproc``, CPU model and Python version, for the README's records."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    # nproc counts the CPUs this process may run on, which is what matters here.
    return (f"nproc={len(os.sched_getaffinity(0))} cpu={model!r} "
            f"python={platform.python_version()} "
            f"date={time.strftime('%Y-%m-%d')}")


def proc_status(field: str, pid: int | str = "self") -> int:
    """A field of ``/proc/PID/status`` (sizes in kB, ``Threads`` a count)."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def status_mib(field: str, pid: int | str = "self") -> float:
    """A size field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``), in MiB."""
    return proc_status(field, pid) / 1024


def cpu_seconds(pid: int) -> float:
    """``utime + stime`` of every thread of ``pid``, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name may hold spaces; the fields resume after its ")".
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_started_up(exporter: Exporter, n: int, timeout: float, poll: float) -> None:
    """Wait until every credential holds a token and every probe has run once."""
    states = list(exporter.provider_states())

    def started_up() -> bool:
        return all(s.token is not None and all(p.last_run is not None
                                               for p in s.probes.values())
                   for s in states)

    deadline = time.monotonic() + timeout
    while not started_up() and time.monotonic() < deadline:
        await asyncio.sleep(poll)
    if not started_up():
        raise RuntimeError(f"{n} credentials not started up within {timeout}s")


def run_child(cmd: Sequence[str], n: int, timeout: float) -> dict[str, Any]:
    """Run one benchmark size in a fresh interpreter; return its ``RESULT`` line."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False,
                          timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT "):])
            return result
    raise RuntimeError(f"size {n} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def add_sizes_argument(parser: argparse.ArgumentParser, defaults: Sequence[int]) -> None:
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=list(defaults), help="comma-separated credential counts")
