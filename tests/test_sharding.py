"""Sharding splits providers between replicas: disjoint, complete, stable."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from exporter.sharding import select, shard_of

REPO = Path(__file__).resolve().parent.parent
NAMES = [f"provider-{i:03d}" for i in range(200)]


@pytest.mark.parametrize("total", [1, 2, 3, 5, 8])
def test_shards_partition_the_names(total: int) -> None:
    shards = [select(NAMES, shard, total) for shard in range(total)]
    everything = [name for shard in shards for name in shard]
    assert sorted(everything) == sorted(NAMES)  # complete, and no name twice
    assert len(set(everything)) == len(NAMES)
    for shard, owned in enumerate(shards):
        assert all(shard_of(name, total) == shard for name in owned)


def test_select_keeps_input_order() -> None:
    owned = select(NAMES, 1, 3)
    assert owned == [name for name in NAMES if name in set(owned)]
    assert owned == sorted(owned)  # NAMES is sorted, so order kept means sorted


@pytest.mark.parametrize("total", [2, 4])
def test_shards_are_reasonably_balanced(total: int) -> None:
    sizes = Counter(shard_of(name, total) for name in NAMES)
    expected = len(NAMES) / total
    # A uniform hash keeps each shard within ~3 standard deviations of the mean;
    # a broken hash (constant, or a stuck bit) puts everything in one shard.
    assert set(sizes) == set(range(total))
    for size in sizes.values():
        assert abs(size - expected) < 0.3 * expected, sizes


def test_adding_a_provider_moves_no_existing_one() -> None:
    total = 4
    before = {name: shard_of(name, total) for name in NAMES}
    grown = [*NAMES, "simpledocs-prod", "dokstamp-eu"]
    after = {name: shard_of(name, total) for name in grown}
    assert {name: after[name] for name in NAMES} == before
    # The same holds for the shard lists each replica computes.
    for shard in range(total):
        old = select(NAMES, shard, total)
        new = select(grown, shard, total)
        assert [name for name in new if name in before] == old


def test_assignment_is_identical_in_another_process() -> None:
    # Python's hash() would differ between these two processes because of
    # hash randomisation; force different seeds to prove we do not use it.
    code = (
        "import json, sys\n"
        "from exporter.sharding import shard_of\n"
        "names = json.load(sys.stdin)\n"
        "print(json.dumps([shard_of(n, 7) for n in names]))\n"
    )
    results = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(NAMES),
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=True,
            timeout=30,
        )
        results.append(json.loads(done.stdout))
    here = [shard_of(name, 7) for name in NAMES]
    assert results[0] == results[1] == here


def test_known_values_pin_the_hash() -> None:
    # Changing the hash would silently reassign every credential on upgrade;
    # pin it. Values are the first 8 bytes of sha256(name), big-endian, mod 10.
    for name in ("simpledocs-prod", "dokstamp-eu", ""):
        digest = hashlib.sha256(name.encode()).digest()
        assert shard_of(name, 10) == int.from_bytes(digest[:8], "big") % 10
    assert shard_of("anything", 1) == 0


@pytest.mark.parametrize(
    ("shard", "total", "message"),
    [
        (0, 0, "total_shards must be at least 1, got 0"),
        (0, -3, "total_shards must be at least 1, got -3"),
        (-1, 2, "shard must be between 0 and total_shards - 1 (1), got -1"),
        (2, 2, "shard must be between 0 and total_shards - 1 (1), got 2"),
        (True, 2, "shard must be an integer, got True"),
        (0, 2.0, "total_shards must be an integer, got 2.0"),
    ],
)
def test_bad_arguments_are_rejected(shard: object, total: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        select(NAMES, shard, total)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_shard_of_rejects_a_bad_total() -> None:
    with pytest.raises(ValueError, match="total_shards must be at least 1"):
        shard_of("x", 0)


@pytest.mark.slow
def test_cli_replicas_hold_disjoint_complete_provider_sets(tmp_path: Path) -> None:
    """Three replicas given the same file: each provider is held by exactly one."""
    names = [f"provider-{i}" for i in range(12)]
    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n" + "".join(
        f"  - name: {n}\n    token_url: https://auth.example/token\n"
        f"    client_id: id\n    client_secret: s\n" for n in names))
    held: list[str] = []
    for shard in range(3):
        proc = subprocess.run(
            [sys.executable, "-m", "exporter", "--check-config", "--config.file", str(path),
             "--shard", str(shard), "--total-shards", "3"],
            capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        line = next(x for x in proc.stdout.splitlines() if x.startswith(f"shard {shard} of 3"))
        owned = line.split("holds: ", 1)[1].split(", ")
        assert owned == select(names, shard, 3)
        held += owned
    assert sorted(held) == sorted(names)
    bad = subprocess.run([sys.executable, "-m", "exporter", "--check-config", "--config.file",
                          str(path), "--shard", "3", "--total-shards", "3"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "shard must be between 0 and total_shards - 1" in bad.stderr
