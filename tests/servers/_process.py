"""Start a test server as a child process and learn its addresses from its first line.

Each server binds loopback ports the kernel chooses (so parallel runs never
collide) and prints one JSON object on a line once it is listening. The
fixture waits for that line with a generous deadline, and on any failure shows
what the server wrote to stderr, so a broken install is plain to see.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

#: A cold start of node or Django on a busy two-core machine can take seconds.
START_TIMEOUT = 60.0


def _read_line(stream: IO[bytes], deadline: float) -> bytes | None:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    buffer = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(stream.fileno(), 4096)
            if not chunk:
                return None
            buffer += chunk
            if b"\n" in buffer:
                return buffer.split(b"\n", 1)[0]
    finally:
        selector.close()
    return None


@contextmanager
def server_process(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    log: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Run ``argv``; yield the JSON object of its first stdout line; stop it afterwards."""
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=stderr,
            env={**os.environ, **(env or {})},
        )
        try:
            assert proc.stdout is not None
            line = _read_line(proc.stdout, time.monotonic() + START_TIMEOUT)
            if line is None:
                proc.kill()
                proc.wait(10)
                pytest.fail(
                    f"{name} did not start (exit status {proc.returncode}); "
                    f"its stderr:\n{log.read_text(errors='replace')[-4000:]}"
                )
            try:
                info = json.loads(line)
            except ValueError:
                pytest.fail(f"{name} printed {line[:200]!r} instead of its addresses")
            assert isinstance(info, dict)
            yield info
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
