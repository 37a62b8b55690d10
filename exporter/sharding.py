"""Which exporter replica owns which credential.

Why: a credential (one provider entry) must be held by exactly one replica.
Two replicas renewing tokens for the same credential double the load on
rate-limited token endpoints, and at providers that allow one active token per
application (SimpleDocs) every renewal by one replica revokes the token the
other replica holds, so both would report `token_revoked` probe failures that
they caused themselves. Running N replicas therefore means splitting the
configured providers into N disjoint shards, each replica monitoring one.

How: like kube-state-metrics' `--shard`/`--total-shards`, every replica is
given the same configuration, its own shard number and the total, and keeps
the objects whose hash modulo the total equals its shard. No coordination,
leases or shared state are needed; a StatefulSet's pod ordinal is a natural
shard number. Differences from kube-state-metrics:

* it hashes Kubernetes object UIDs, we hash the configured provider `name`,
  which is unique and stable across restarts and reloads, so a credential
  stays on the same replica as long as its name and the total are unchanged;
* the hash is the first 8 bytes of SHA-256, read big-endian, never Python's
  `hash()`, which is salted per process (PYTHONHASHSEED) and would make
  replicas disagree about ownership;
* adding or removing a provider never moves another provider (each name's
  shard depends only on that name and the total); changing the total moves
  most of them, exactly as in kube-state-metrics, so change `--total-shards`
  and the replica count together, in one rollout.

Everything here is pure: no I/O, no clock, no global state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["select", "shard_of", "validate"]


def validate(shard: int, total_shards: int) -> None:
    """Raise ValueError unless `shard` is a valid index into `total_shards` shards."""
    # bool is an int subclass; True as a shard number is a caller bug, not shard 1.
    if isinstance(total_shards, bool) or not isinstance(total_shards, int):
        raise ValueError(f"total_shards must be an integer, got {total_shards!r}")
    if total_shards < 1:
        raise ValueError(f"total_shards must be at least 1, got {total_shards}")
    if isinstance(shard, bool) or not isinstance(shard, int):
        raise ValueError(f"shard must be an integer, got {shard!r}")
    if not 0 <= shard < total_shards:
        raise ValueError(
            f"shard must be between 0 and total_shards - 1 ({total_shards - 1}), got {shard}"
        )


def shard_of(name: str, total_shards: int) -> int:
    """Return the shard (0 .. total_shards-1) that owns the provider `name`.

    The result depends only on `name` and `total_shards`, so it is the same in
    every process, on every machine and in every Python version.
    """
    validate(0, total_shards)
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total_shards


def select(names: Iterable[str], shard: int, total_shards: int) -> list[str]:
    """Return the names owned by `shard`, in their original order."""
    validate(shard, total_shards)
    return [name for name in names if shard_of(name, total_shards) == shard]
