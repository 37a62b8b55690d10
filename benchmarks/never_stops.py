"""Renewal schedules that never stop: the real CLI against an always-failing endpoint.

Starts a loopback token endpoint that answers every request with HTTP 500, runs
the real exporter (``python -m exporter``) with N credentials on it and a short
backoff, and counts, per credential and per slice of time, the token requests
the endpoint received. A schedule that stopped shows up as a slice with zero
requests; the exporter's own ``oauth_exporter_renewal_stalls_total`` must stay
at 0 (the watchdog found nothing to repair).

The figure: the fewest requests any credential made in any slice, as a ratio
to the median slice of the same run (a schedule that died shows a 0; one that
kept going stays well above it, however loaded the machine). It passes when no
credential went silent in any slice and the watchdog counted no stall.

    python -m benchmarks.never_stops                 # 10 credentials, 10 minutes
    python -m benchmarks.never_stops --quick         # smoke test, seconds
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from benchmarks._common import machine
from tests.scripted import free_port


class _Failing(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        client = parse_qs(body.decode()).get("client_id", ["?"])[0]
        with self.server.lock:
            self.server.arrivals.append((time.monotonic(), client))
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Failing)
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, str]] = []

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The exporter is stopped mid-request at the end of the run: no traceback.
        pass


def config_text(n: int, port: int, backoff: str) -> str:
    lines = ["providers:"]
    for i in range(n):
        lines += [
            f"  - name: cred-{i:02d}",
            f"    token_url: http://127.0.0.1:{port}/oauth/token",
            f"    client_id: client-{i:02d}",
            "    client_secret: never-stops-secret",
            f"    backoff_initial: {backoff}",
            f"    backoff_max: {backoff}",
            "    timeout: 5s",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.never_stops",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--credentials", type=int, default=10)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds")
    parser.add_argument("--slice", type=float, default=60.0, help="seconds per slice")
    parser.add_argument("--backoff", default="50ms")
    parser.add_argument("--quick", action="store_true", help="a few seconds (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.credentials, args.duration, args.slice = 3, 6.0, 2.0

    server = _Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "providers.yaml"
        config.write_text(config_text(args.credentials, port, args.backoff))
        listen = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--config.file", str(config),
             "--web.listen-address", f"127.0.0.1:{listen}", "--log.level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            started = time.monotonic()
            deadline = started + args.duration
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.5)
            ended = time.monotonic()
            stalls = "exporter exited early"
            if proc.poll() is None:
                text = httpx.get(f"http://127.0.0.1:{listen}/metrics", timeout=10).text
                match = re.search(r"^oauth_exporter_renewal_stalls_total (\S+)$", text, re.M)
                stalls = match.group(1) if match else "not exported"
        finally:
            proc.terminate()
            proc.wait(30)
    server.shutdown()

    # Slices start at the first request: the interpreter's start-up (seconds on
    # a loaded machine) is not a schedule that stopped.
    if server.arrivals:
        started = min(at for at, _ in server.arrivals)
    slices = max(int((ended - started) // args.slice), 1)
    counts: dict[str, Counter[int]] = {f"client-{i:02d}": Counter()
                                       for i in range(args.credentials)}
    for at, client in server.arrivals:
        index = int((at - started) // args.slice)
        if client in counts and index < slices:
            counts[client][index] += 1
    per_slice = sorted(c[s] for c in counts.values() for s in range(slices))
    fewest, median = per_slice[0], per_slice[len(per_slice) // 2]
    silent = sum(1 for c in counts.values() if min(c[s] for s in range(slices)) == 0)
    print(f"never_stops  {machine()}")
    print(f"{args.credentials} credentials, token endpoint always 500, backoff "
          f"{args.backoff}, {args.duration:g} s in {slices} slices of {args.slice:g} s")
    print(f"token requests received: {len(server.arrivals)}")
    print(f"fewest requests by one credential in one slice: {fewest} "
          f"(median slice {median}; ratio {fewest / max(median, 1):.2f})")
    print(f"credentials that went silent in some slice: {silent}")
    print(f"oauth_exporter_renewal_stalls_total: {stalls}")
    # A stopped schedule is a credential silent for a whole slice, or a stall the
    # watchdog had to repair; the ratio says how even the retrying was.
    ok = silent == 0 and stalls in ("0", "0.0")
    return 0 if ok else 1



if __name__ == "__main__":
    raise SystemExit(main())
