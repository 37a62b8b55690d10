"""The benchmark scripts still run (each at a tiny size, via its --quick flag).

Benchmarks are scripts, not tests: their figures are recorded in
benchmarks/README.md. This only proves each one starts, talks to the simulator
and prints its figures, so a refactor cannot silently break them. (That the
direct renderer is byte-identical to prometheus-client's encoders is
tests/test_collector.py's job.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# name -> a phrase its output must contain
BENCHMARKS = {
    "scrape": "scrape ms columns",
    "token_economy": "token requests per credential",
    "capacity": "capacity: figures per size above",
    "memory": "RSS in MiB",
    "never_stops": "fewest requests by one credential in one slice",
    "bombs": "target met",
    "flood": "idle connections",
}


#: Seconds a quick run may take, where more than a minute: capacity starts the
#: exporter, then each of its floors (blackbox_exporter among them) in turn.
TIMEOUTS = {"capacity": 180}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_benchmark_runs_quick(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUTS.get(name, 60), check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert BENCHMARKS[name] in proc.stdout, proc.stdout
