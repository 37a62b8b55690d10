"""Peak memory of the real exporter process while decompression bombs are all it is served.

A loopback server answers every path with a 1 GiB bomb: gzip, deflate, and
"gzip, gzip" (about 1 MB, 1 MB and 2 KB on the wire), and gzip behind a 401.
The real CLI (``python -m exporter``) runs in a subprocess with a provider
file in which

* ``--bombed-tokens`` providers (default 8) get a bomb from their token
  endpoint, the four kinds in turn, and retry every 1 to 2 s;
* ``--providers`` providers (default 10) get a good token and then a bomb from
  every one of their probes (one probe of each kind), every second.

After ``--seconds`` (default 60) the script reads the process's peak resident
set size (``VmHWM`` in ``/proc/<pid>/status``), its ``/metrics`` (every probe
and token endpoint must have been refused with ``invalid_response`` again and
again: the schedules keep running), and its log (each refusal says ``decoded
body larger than N bytes``). Then it runs the same process with the bombs
replaced by small answers, for comparison. Target: peak RSS < 150 MiB.

    python -m benchmarks.bombs
    python -m benchmarks.bombs --providers 50 --seconds 120
    python -m benchmarks.bombs --quick        # smoke test
    git worktree add /tmp/before <commit> && \
        python -m benchmarks.bombs --exporter-source /tmp/before   # before/after
"""

from __future__ import annotations

import argparse
import gzip
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks._common import machine, status_mib
from tests.scripted import Answer, bomb_answer, free_port, scripted_server

TARGET_MIB = 150.0
DECODED = 1 << 30
#: path -> (coding, status) of the bomb served there.
BOMBS: dict[str, tuple[str, int]] = {
    "/gzip": ("gzip", 200),
    "/deflate": ("deflate", 200),
    "/gzip-gzip": ("gzip, gzip", 200),
    "/401-gzip": ("gzip", 401),
}
SECRET = "bombs-benchmark-secret-W8k"


def script(bombs: bool) -> dict[str, Answer]:
    answers: dict[str, Answer] = {
        "/token": Answer(200, {"access_token": "bombs-benchmark-token", "expires_in": 3600,
                               "token_type": "Bearer"}),
    }
    for path, (coding, status) in BOMBS.items():
        if bombs:
            answers[path] = bomb_answer(DECODED, coding, status)
        else:
            # The comparison run: the same paths, small answers that decode fine.
            answers[path] = Answer(200, gzip.compress(b'{"ok": true}'),
                                   {"Content-Encoding": "gzip",
                                    "Content-Type": "application/json"})
    return answers


def provider_file(base: str, providers: int, bombed_tokens: int) -> str:
    entries: list[dict[str, object]] = []
    paths = list(BOMBS)
    for i in range(providers):
        entries.append({
            "name": f"api-{i:03d}", "token_url": base + "/token", "client_id": f"c{i}",
            "client_secret": SECRET, "probe_interval": "1s", "timeout": "900ms",
            "probes": [{"name": path.strip("/"), "url": base + path} for path in paths],
        })
    for i in range(bombed_tokens):
        path = paths[i % len(paths)]
        entries.append({
            "name": f"token-{i:03d}{path.replace('/', '-')}", "token_url": base + path,
            "client_id": f"t{i}", "client_secret": SECRET,
            "backoff_initial": "1s", "backoff_max": "2s",
        })
    return yaml.safe_dump({"providers": entries})


@dataclass
class Run:
    peak_mib: float
    rss_mib: float
    probe_refusals: dict[str, float]
    token_refusals: dict[str, float]
    log_refusals: int
    secret_in_log: bool


def refusals(metrics: str) -> tuple[dict[str, float], dict[str, float]]:
    """``invalid_response`` failures per probe and per token endpoint, from /metrics."""
    probes: dict[str, float] = {}
    tokens: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("error") != "invalid_response" or not sample.name.endswith("_total"):
                continue
            # Every class's series may be there at 0: count only the bombed ones.
            provider = labels.get("provider", "")
            if sample.name == "oauth_probe_failures_total" and provider.startswith("api-"):
                probes[f"{provider}/{labels['probe']}"] = sample.value
            elif (sample.name == "oauth_token_refresh_failures_total"
                  and provider.startswith("token-")):
                tokens[provider] = sample.value
    return probes, tokens


def run_exporter(bombs: bool, providers: int, bombed_tokens: int, seconds: float,
                 source: Path | None = None) -> Run:
    """One run of the real CLI against the loopback server; measured at the end.

    ``source``: run the exporter from that source tree (a checkout of another
    commit, for a before/after figure) instead of this one.
    """
    with scripted_server(script(bombs)) as base, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "providers.yaml"
        config.write_text(provider_file(base, providers, bombed_tokens), encoding="utf-8")
        port = free_port()
        log_path = Path(tmp) / "exporter.log"
        with open(log_path, "w", encoding="utf-8") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "exporter", "--config.file", str(config),
                 "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "info"],
                stdout=log, stderr=subprocess.STDOUT, cwd=source,
                env={**os.environ, "PYTHONUNBUFFERED": "1",
                     **({"PYTHONPATH": str(source)} if source else {})})
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"the exporter exited:\n{log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(url + "/-/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            else:
                raise RuntimeError("the exporter did not become ready within 60 s")
            time.sleep(seconds)
            metrics = httpx.get(url + "/metrics", timeout=10).text
            peak, rss = status_mib("VmHWM", proc.pid), status_mib("VmRSS", proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        text = log_path.read_text(encoding="utf-8")
    probes, tokens = refusals(metrics)
    return Run(peak, rss, probes, tokens, text.count("decoded body larger than"),
               SECRET in text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bombs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", type=int, default=10,
                        help="providers whose every probe is served a bomb")
    parser.add_argument("--bombed-tokens", type=int, default=8,
                        help="providers whose token endpoint serves a bomb")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each run lasts")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the comparison run without bombs")
    parser.add_argument("--exporter-source", type=Path, metavar="DIR",
                        help="run the exporter from this source tree (e.g. a worktree of an "
                        "older commit) to compare")
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.providers, args.bombed_tokens, args.seconds, args.no_baseline = 2, 4, 4.0, True

    print(f"bombs  {machine()}")
    probes = args.providers * len(BOMBS)
    print(f"{args.providers} providers x {len(BOMBS)} bombed probes every 1 s, "
          f"{args.bombed_tokens} bombed token endpoints; 1 GiB bombs "
          f"({' / '.join(f'{c} {s}' for c, s in BOMBS.values())}), {args.seconds:g} s")
    run = run_exporter(True, args.providers, args.bombed_tokens, args.seconds,
                       args.exporter_source)
    least_probe = min(run.probe_refusals.values(), default=0.0)
    least_token = min(run.token_refusals.values(), default=0.0)
    print(f"peak RSS in MiB (VmHWM): {run.peak_mib:.1f} with bombs (RSS at the end "
          f"{run.rss_mib:.1f}); target < {TARGET_MIB:g}")
    print(f"refused (invalid_response): {sum(run.probe_refusals.values()):.0f} probe runs, "
          f"at least {least_probe:.0f} for each of {len(run.probe_refusals)}/{probes} probes; "
          f"{sum(run.token_refusals.values()):.0f} token requests, at least {least_token:.0f} "
          f"for each of {len(run.token_refusals)}/{args.bombed_tokens} token endpoints")
    print(f"log lines 'decoded body larger than': {run.log_refusals}; "
          f"secret in log: {'YES' if run.secret_in_log else 'no'}")
    if not args.no_baseline:
        base = run_exporter(False, args.providers, args.bombed_tokens, args.seconds,
                            args.exporter_source)
        print(f"peak RSS in MiB (VmHWM): {base.peak_mib:.1f} with the same answers not bombs")
    ok = (run.peak_mib < TARGET_MIB and len(run.probe_refusals) == probes and least_probe >= 2
          and len(run.token_refusals) == args.bombed_tokens and least_token >= 1
          and not run.secret_in_log)
    print("target met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
