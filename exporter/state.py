"""What the exporter knows about each provider, as plain data.

Jobs write this state on the event loop; the collector and the landing page
read it from the HTTP thread at scrape time. Every field a reader needs
together (token value, issue and expiry times) is replaced as one immutable
object, and counter dicts are filled with every key up front, so a reader
never sees a dict change size or half of an update.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.config import Probe, Provider
from exporter.errors import ALL_ERROR_CLASSES, ErrorClass
from exporter.tokens import Token

TOKEN_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PROBE_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Per-bucket counts (made cumulative by the collector), a sum and a count."""

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


def _zero_by_class() -> dict[ErrorClass, int]:
    return dict.fromkeys(ALL_ERROR_CLASSES, 0)


@dataclass
class ProbeState:
    probe: Probe
    attempts: int = 0
    failures: dict[ErrorClass, int] = field(default_factory=_zero_by_class)
    success: bool | None = None
    status: int = 0
    last_error: ErrorClass | None = None
    last_run: float | None = None
    last_success: float | None = None
    duration: Histogram = field(default_factory=lambda: Histogram(PROBE_BUCKETS))
    #: Why the last run sent nothing (no token, say), for the landing page; None if it sent.
    skip_reason: str | None = None
    #: Failed runs since the last success.
    consecutive_failures: int = 0


@dataclass
class ProviderState:
    provider: Provider
    token: Token | None = None
    #: The server told a probe this token is revoked or expired.
    token_rejected: bool = False
    next_renewal: float | None = None
    attempts: int = 0
    #: Token requests that have come back (answered, failed or timed out).
    completed: int = 0
    failures: dict[ErrorClass, int] = field(default_factory=_zero_by_class)
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
