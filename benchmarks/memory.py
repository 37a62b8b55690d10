"""Resident memory of the exporter at 1,000 and 5,000 credentials (2 probes each).

Each size runs in a fresh interpreter, set up as ``cli.py`` sets up the real
process (config parsed from YAML, log redactor, ``Exporter``, registry with the
collector, web server thread), against the simulator running in another
process. Resident set size is read from ``/proc/self/status`` (``VmRSS``):

* ``imports``: the interpreter with the exporter's modules loaded, no config;
* ``ready``: every credential holds a token and every probe has run once;
* ``scraped``: after one ``/metrics`` render (OpenMetrics, as Prometheus asks),
  whose garbage the allocator may keep;
* ``peak``: ``VmHWM``, the most the process held at any moment.

    python -m benchmarks.memory                    # 1,000 and 5,000 credentials
    python -m benchmarks.memory --sizes 2000
    python -m benchmarks.memory --quick            # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

TARGET_MB_AT_5000 = 200.0
DEFAULT_SIZES = (1000, 5000)
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0"


async def _measure(n: int, startup_timeout: float) -> dict[str, Any]:
    # Imported here so that ``imports`` below counts them, as the real process has them.

    from benchmarks._common import (
        UNLIMITED_KINDS,
        build_config,
        simulator_process,
        status_mib,
        wait_started_up,
    )
    from exporter.logsetup import Redactor, setup_logging
    from exporter.service import build_service

    result: dict[str, Any] = {"credentials": n, "imports": status_mib("VmRSS")}
    with simulator_process(n, UNLIMITED_KINDS, max_seconds=startup_timeout + 120) as sim:
        config = build_config(n, sim.base_urls, UNLIMITED_KINDS, probe_interval=30)
        redactor = Redactor()
        setup_logging("info", "text", redactor, stream=io.StringIO())
        # Through prometheus-client's encoder, as the recorded figures were taken.
        service = build_service(config, redactor=redactor, direct_render=False)
        exporter, app = service.exporter, service.app
        started = time.monotonic()
        await service.start()
        states = list(exporter.provider_states())
        await wait_started_up(exporter, n, startup_timeout, 0.5)
        result["startup_seconds"] = time.monotonic() - started
        result["ready"] = status_mib("VmRSS")
        body, _ = app.metrics(OPENMETRICS_ACCEPT)
        result["metrics_bytes"] = len(body)
        del body
        result["scraped"] = status_mib("VmRSS")
        result["peak"] = status_mib("VmHWM")
        result["failures"] = sum(sum(s.failures.values()) + sum(
            sum(p.failures.values()) for p in s.probes.values()) for s in states)
        await service.stop()
    return result


def run_size(n: int, startup_timeout: float) -> dict[str, Any]:
    """One size in a fresh interpreter, so no size inherits another's heap."""
    cmd = [sys.executable, "-m", "benchmarks.memory", "--child", str(n),
           "--startup-timeout", str(startup_timeout)]
    from benchmarks._common import run_child

    return run_child(cmd, n, timeout=startup_timeout + 300)


def main(argv: Sequence[str] | None = None) -> int:
    # The child imports benchmarks._common before measuring anyway.
    from benchmarks._common import add_sizes_argument

    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory",
                                     description=__doc__.split("\n\n")[0])
    add_sizes_argument(parser, DEFAULT_SIZES)
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        result = asyncio.run(_measure(args.child, args.startup_timeout))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if args.quick:
        args.sizes, args.startup_timeout = [5], 60.0

    from benchmarks._common import machine

    print(f"memory  {machine()}")
    print(f"RSS in MiB (VmRSS); target at 5,000 credentials < {TARGET_MB_AT_5000:g} MB")
    print(f"{'creds':>6} {'imports':>8} {'ready':>8} {'scraped':>8} {'peak':>8} "
          f"{'per cred KiB':>12} {'start s':>8} {'fails':>6}")
    for n in args.sizes:
        r = run_size(n, args.startup_timeout)
        per_cred = (r["ready"] - r["imports"]) * 1024 / n
        print(f"{n:>6} {r['imports']:>8.1f} {r['ready']:>8.1f} {r['scraped']:>8.1f} "
              f"{r['peak']:>8.1f} {per_cred:>12.1f} {r['startup_seconds']:>8.1f} "
              f"{r['failures']:>6}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
