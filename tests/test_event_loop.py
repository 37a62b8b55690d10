"""The command line's event loop (uvloop where installed) and its debug lag file.

uvloop is in the ``test`` extra, so these tests run the real command line on
it: a missing uvloop fails them rather than skipping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import uvloop

from exporter.cli import event_loop_factory
from exporter.laglog import ENV, LagLog, read_lag_file
from tests.harness import wait_for
from tests.scripted import free_port

ROOT = Path(__file__).resolve().parent.parent

#: The demo's probes (exporter/demo.yaml): each writes a lag line when it first runs.
DEMO_PROBES = 8


def test_uvloop_where_installed_asyncio_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    factory, name = event_loop_factory()
    assert (factory, name) == (uvloop.new_event_loop, "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    assert event_loop_factory() == (None, "asyncio")


def test_lag_log_writes_what_it_was_told_once_flushed(tmp_path: Path) -> None:
    path = tmp_path / "lag.txt"
    path.write_text("left from an earlier run\n")
    times = iter([100.0, 101.5])
    log = LagLog(str(path), clock=lambda: next(times))
    assert path.read_text() == ""  # truncated at start
    log.record(0.002)
    log.record(1.25)
    assert read_lag_file(str(path)) == []  # nothing written before a flush
    log.flush()
    log.flush()  # nothing new: nothing appended
    assert read_lag_file(str(path)) == [(100.0, 0.002), (101.5, 1.25)]


@pytest.mark.slow
def test_cli_serves_on_uvloop_and_writes_every_probe_runs_lag(tmp_path: Path) -> None:
    lag = tmp_path / "lag.txt"
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), ENV: str(lag)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--web.listen-address", f"127.0.0.1:{port}"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return httpx.get(base + "/-/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=60, message="the exporter to be ready")
        # Each on a connection of its own, closed by the server after the answer:
        # the close path is where uvloop's transports differ from asyncio's.
        for path in ("/metrics", "/", "/-/healthy"):
            response = httpx.get(base + path, headers={"Connection": "close"}, timeout=10)
            assert response.status_code == 200, path
        wait_for(lambda: lag.exists() and len(read_lag_file(str(lag))) >= DEMO_PROBES,
                 timeout=30, message="a lag line for every demo probe")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert 'msg="event loop: uvloop"' in stderr
    assert "Traceback" not in stderr and "level=error" not in stderr, stderr
    lags = [lag for _, lag in read_lag_file(str(lag))]
    assert all(-0.01 <= x < 5 for x in lags), (min(lags), max(lags))
