"""What the exporter knows about each provider, as plain data.

Jobs write this state on the event loop; the collector and the landing page
read it from another thread at scrape time. So that a reader never sees a
container change size or half of an update:

* every field a reader needs together (token value, issue and expiry times)
  is replaced as one immutable object;
* failure counts by class (``ClassCounts``) are filled lazily, a class when it
  first happens, by copy-on-write: adding a class builds a new dict and swaps
  it in, so a reader iterating the old one is undisturbed.

Every write is counted in the object's ``version`` (attribute assignment,
``failures[...]`` and ``duration.observe()`` all count), so the scrape renders
again only what changed since the last scrape. State written any other way
(mutating a container in place) would not be seen by that cache: don't.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.config import Probe, Provider
from exporter.errors import ALL_ERROR_CLASSES, ErrorClass
from exporter.tokens import Token

TOKEN_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROBE_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: Each class's place in the fixed order, so counts are always exported in it.
_CLASS_ORDER: dict[ErrorClass, int] = {e: i for i, e in enumerate(ALL_ERROR_CLASSES)}


class Histogram:
    """Per-bucket counts (made cumulative by the collector), a sum and a count.

    Buckets are always counted (ten ints; a bisect per observation): whether
    they are *exported* is the collector's choice, made once at start-up.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


class ClassCounts(Mapping[ErrorClass, int]):
    """Failure counts by error class: a class is present once it has happened.

    ``counts[cls] += 1`` works for a class not seen yet (it reads as 0). The
    dict behind it only ever grows by replacement, in the fixed class order.
    """

    __slots__ = ("_counts", "writes")

    def __init__(self) -> None:
        self._counts: dict[ErrorClass, int] = {}
        #: Number of writes, for the owner's ``version``.
        self.writes = 0

    def __getitem__(self, error: ErrorClass) -> int:
        return self._counts.get(error, 0)

    def __setitem__(self, error: ErrorClass, value: int) -> None:
        counts = self._counts
        if error in counts:
            counts[error] = value
        else:
            grown = {**counts, error: value}
            self._counts = {e: grown[e] for e in sorted(grown, key=_CLASS_ORDER.__getitem__)}
        self.writes += 1

    def __iter__(self) -> Iterator[ErrorClass]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def __contains__(self, error: object) -> bool:
        return error in self._counts

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClassCounts):
            return self._counts == other._counts
        return isinstance(other, Mapping) and self._counts == dict(other)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"ClassCounts({self._counts!r})"

    def snapshot(self) -> dict[ErrorClass, int]:
        """The current dict: safe to iterate from another thread, never resized."""
        return self._counts


class _Versioned:
    """Counts attribute writes in ``_writes``, for the scrape cache."""

    _writes = 0

    # Hidden from type checkers, which would otherwise accept any attribute name.
    if not TYPE_CHECKING:
        def __setattr__(self, name: str, value: Any) -> None:
            object.__setattr__(self, name, value)
            # After the write: a reader that saw the old count renders again next time.
            object.__setattr__(self, "_writes", self._writes + 1)


@dataclass(eq=False)
class ProbeState(_Versioned):
    probe: Probe
    attempts: int = 0
    failures: ClassCounts = field(default_factory=ClassCounts)
    #: Failed runs (``no_token`` included) since the last success.
    consecutive_failures: int = 0
    success: bool | None = None
    status: int = 0
    last_error: ErrorClass | None = None
    last_run: float | None = None
    last_success: float | None = None
    duration: Histogram = field(default_factory=lambda: Histogram(PROBE_BUCKETS))
    #: Why the last run sent nothing (no token, say), for the landing page; None if it sent.
    skip_reason: str | None = None

    @property
    def version(self) -> int:
        """Changes whenever anything exported from this probe may have changed."""
        return self._writes + self.failures.writes + self.duration.count


@dataclass(eq=False)
class ProviderState(_Versioned):
    provider: Provider
    token: Token | None = None
    #: The server told a probe this token is revoked or expired.
    token_rejected: bool = False
    next_renewal: float | None = None
    attempts: int = 0
    #: Token requests that have come back (answered, failed or timed out).
    completed: int = 0
    failures: ClassCounts = field(default_factory=ClassCounts)
    consecutive_failures: int = 0
    last_error: ErrorClass | None = None
    last_success: float | None = None
    duration: Histogram = field(default_factory=lambda: Histogram(TOKEN_BUCKETS))
    probes: dict[str, ProbeState] = field(default_factory=dict)
    #: A token request is in flight (or waiting for the host's rate limit).
    renewing: bool = False
    #: A probe succeeded with the held token: the API takes it.
    token_accepted: bool = False
    #: The API refused a fresh token too: no probe brings a renewal forward
    #: until the next scheduled one (``exporter.renewal``).
    refused_fresh: bool = False
    #: Providers with an ``issuer``: when its metadata document was last read
    #: successfully (``exporter.endpoints``).
    discovery_last_success: float | None = None
    #: Failed metadata reads by class (``exporter.discovery.DISCOVERY_ERROR_CLASSES``),
    #: a class once it has happened. Replaced on every change, never changed in
    #: place, so a reader on another thread sees one whole dict.
    discovery_failures: Mapping[str, int] = field(default_factory=dict)
    #: The class of the last failed metadata read, None once one succeeds.
    discovery_last_error: str | None = None

    def __post_init__(self) -> None:
        if not self.probes:
            self.probes = {p.name: ProbeState(p) for p in self.provider.probes}

    @property
    def version(self) -> int:
        """Changes whenever anything exported at the provider level may have changed
        (its probes have their own)."""
        return self._writes + self.failures.writes + self.duration.count

    def valid_token(self, now: float) -> Token | None:
        """The held token if it is unexpired and not known to be rejected."""
        token = self.token
        if token is None or self.token_rejected or now >= token.expires_at:
            return None
        return token

    def unexpired_token(self, now: float) -> Token | None:
        """The held token if it is unexpired, even if the API refused it."""
        token = self.token
        if token is None or now >= token.expires_at:
            return None
        return token

    @property
    def attempted(self) -> bool:
        """Whether a token request has come back, whatever its outcome."""
        return self.completed > 0 or self.token is not None

    @property
    def pending(self) -> bool:
        """True until the first token request has completed (``oauth_token_pending``)."""
        return not self.attempted
