"""Token requests per credential, against the renewal policy's minimum and blackbox_exporter.

Time is compressed: the simulator issues tokens that live ``--lifetime``
seconds (3 s by default instead of an hour), and the exporter runs for
``--window`` seconds (90 s: 30 lifetimes), with ``--credentials`` credentials
whose 2 probes run every ``--probe-interval`` seconds. The simulator runs in
its own process and logs every token request it receives.

The renewal policy (``renewal.py``) renews a token once ``renew_at_fraction``
(f, 0.67) of its lifetime L has passed, up to ``renew_jitter`` (j, 0.05) of L
earlier, at random: each renewal gap is L * U(f - j, f), mean L * (f - j/2).
So over a window W a credential needs at least 1 + W / (L * f) token requests
(no jitter) and, on average, 1 + W / (L * (f - j/2)): that is the minimum the
policy allows. Anything above it (a probe's 401 forcing a renewal, a retry, a
token requested per probe) shows up as excess. blackbox_exporter requests one
token per probe run, so its figure is simply the probe runs in the window.

    python -m benchmarks.token_economy
    python -m benchmarks.token_economy --lifetime 5 --window 150
    python -m benchmarks.token_economy --quick        # smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from benchmarks._common import (
    UNLIMITED_KINDS,
    build_config,
    credential,
    machine,
    simulator_process,
)
from exporter.errors import ErrorClass
from exporter.logsetup import Redactor, setup_logging
from exporter.service import build_service

RENEW_AT = 0.67  # the config defaults, stated here so the arithmetic below is visible
RENEW_JITTER = 0.05


async def run(n: int, lifetime: int, window: float, probe_interval: float) -> dict[str, Any]:
    with simulator_process(n, UNLIMITED_KINDS, lifetime=lifetime,
                           max_seconds=window + 120) as sim:
        config = build_config(n, sim.base_urls, UNLIMITED_KINDS, probe_interval=probe_interval,
                              defaults={"renew_at_fraction": RENEW_AT,
                                        "renew_jitter": RENEW_JITTER})
        redactor = Redactor()
        setup_logging("info", "text", redactor, stream=io.StringIO())
        service = build_service(config, redactor=redactor)
        exporter = service.exporter
        started = time.time()
        await service.start()
        await asyncio.sleep(window)
        states = list(exporter.provider_states())
        elapsed = time.time() - started
        await service.stop()
        log = sim.token_log()
        stats = sim.stats()

    by_client: dict[str, list[float]] = defaultdict(list)
    for client_id, at, _issued in log:
        if client_id is not None:
            by_client[client_id].append(at)
    requests, gaps, firsts = [], [], []
    for i in range(n):
        times = sorted(by_client.get(credential(i)[1], []))
        requests.append(len(times))
        firsts.append(times[0] - started if times else elapsed)
        gaps += [b - a for a, b in itertools.pairwise(times)]
    # The policy minimum for each credential's own window: from its first token
    # request (start-up is paced) to the end of the run.
    windows = [elapsed - first for first in firsts]
    minimum = statistics.mean(1 + w / (lifetime * RENEW_AT) for w in windows)
    expected = statistics.mean(1 + w / (lifetime * (RENEW_AT - RENEW_JITTER / 2))
                               for w in windows)
    ceiling = statistics.mean(1 + w / (lifetime * (RENEW_AT - RENEW_JITTER)) for w in windows)
    # Every probe run (sent, or skipped for want of a token) is a token request
    # for blackbox_exporter.
    blackbox = [sum(ps.attempts + ps.failures[ErrorClass.NO_TOKEN] for ps in st.probes.values())
                for st in states]
    return {
        "credentials": n,
        "lifetime": lifetime,
        "window": elapsed,
        "requests_mean": statistics.mean(requests),
        "requests_min": min(requests),
        "requests_max": max(requests),
        "exporter_attempts": sum(st.attempts for st in states),
        "simulator_requests": stats["token_requests"],
        "token_failures": sum(sum(st.failures.values()) for st in states),
        "probe_failures": sum(sum(ps.failures.values()) for st in states
                              for ps in st.probes.values()),
        "gap_fraction_mean": statistics.mean(gaps) / lifetime if gaps else float("nan"),
        "gap_fraction_min": min(gaps) / lifetime if gaps else float("nan"),
        "gap_fraction_max": max(gaps) / lifetime if gaps else float("nan"),
        "policy_floor": minimum,
        "policy_expected": expected,
        "policy_ceiling": ceiling,
        "blackbox_mean": statistics.mean(blackbox),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.token_economy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--credentials", type=int, default=20)
    parser.add_argument("--lifetime", type=int, default=3, help="token lifetime (s)")
    parser.add_argument("--window", type=float, default=90.0, help="seconds to run")
    parser.add_argument("--probe-interval", type=float, default=0.5, help="seconds")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.credentials, args.lifetime, args.window = 4, 2, 5.0

    print(f"token_economy  {machine()}")
    r = asyncio.run(run(args.credentials, args.lifetime, args.window, args.probe_interval))
    lifetimes = r["window"] / r["lifetime"]
    print(f"{r['credentials']} credentials, token lifetime {r['lifetime']} s, "
          f"{r['window']:.1f} s run ({lifetimes:.0f} lifetimes), "
          f"2 probes each every {args.probe_interval:g} s; "
          f"renew_at_fraction {RENEW_AT}, renew_jitter {RENEW_JITTER}")
    print(f"token requests per credential:  measured {r['requests_mean']:.2f} "
          f"(min {r['requests_min']}, max {r['requests_max']})")
    print(f"  policy minimum:               {r['policy_expected']:.2f} on average "
          f"(bounds {r['policy_floor']:.2f} without jitter .. {r['policy_ceiling']:.2f} "
          "with the most jitter)")
    print(f"  ratio measured / policy:      {r['requests_mean'] / r['policy_expected']:.3f}")
    print(f"  blackbox_exporter (1/probe):  {r['blackbox_mean']:.1f}  "
          f"({r['blackbox_mean'] / r['requests_mean']:.0f}x ours)")
    print(f"renewal gap / lifetime:         mean {r['gap_fraction_mean']:.3f} "
          f"(min {r['gap_fraction_min']:.3f}, max {r['gap_fraction_max']:.3f}); "
          f"policy U({RENEW_AT - RENEW_JITTER:.2f}, {RENEW_AT:.2f}), "
          f"mean {RENEW_AT - RENEW_JITTER / 2:.3f}")
    print(f"cross-check: exporter counted {r['exporter_attempts']} token requests, "
          f"simulator received {r['simulator_requests']}; token failures "
          f"{r['token_failures']}, probe failures {r['probe_failures']}")
    real_ours = 86_400 / (3600 * (RENEW_AT - RENEW_JITTER / 2))
    real_blackbox = 2 * 86_400 / 30
    print(f"at real scale (1 h tokens, 2 probes every 30 s), per credential per day: "
          f"ours {real_ours:.1f}, blackbox_exporter {real_blackbox:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
