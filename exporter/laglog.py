"""Debug only: every probe run's schedule lag, appended to a file.

Set ``TOKEN_EXPORTER_DEBUG_SCHEDULE_LAG_FILE=PATH`` and the command line
writes one line per probe run, ``<wall-clock time> <lag seconds>``, where the
lag is how long after its planned time (jitter included) the run started:
the timer's wake-up plus whatever else the event loop had to do first. The
capacity benchmark reads it to tell whether the exporter keeps its schedule.
It is not a metric because its use is measuring the exporter, not watching
credentials; and it stays out of ``--help`` for the same reason.

Lines are collected in memory and written once a second (and at shutdown),
so recording costs a list append per run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: The environment variable naming the file (truncated at start).
ENV = "TOKEN_EXPORTER_DEBUG_SCHEDULE_LAG_FILE"


class LagLog:
    """Collects ``(time, lag)`` pairs and appends them to ``path`` every ``interval`` s."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time,
                 interval: float = 1.0) -> None:
        self.path = path
        self._clock = clock
        self._interval = interval
        self._pending: list[tuple[float, float]] = []
        with open(path, "w", encoding="ascii"):
            pass

    def record(self, lag: float) -> None:
        self._pending.append((self._clock(), lag))

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            with open(self.path, "a", encoding="ascii") as f:
                f.write("".join(f"{at:.3f} {lag:.6f}\n" for at, lag in pending))

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(self._interval)
                self.flush()
        finally:
            self.flush()


def read_lag_file(path: str) -> list[tuple[float, float]]:
    """The ``(time, lag)`` pairs a ``LagLog`` wrote."""
    pairs: list[tuple[float, float]] = []
    with open(path, encoding="ascii") as f:
        for line in f:
            at, _, lag = line.partition(" ")
            if lag:
                pairs.append((float(at), float(lag)))
    return pairs
