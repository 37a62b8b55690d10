"""When things run: sleeping until a wall-clock time, pacing starts, the watchdog.

There is no job store. Each credential's renewal and each probe is one
long-lived asyncio task that sleeps until its next due time (``sleep_until``)
and can be woken early; the task is the plan, so a plan cannot fall out of a
store while its owner runs. The watchdog checks that invariant from outside:
a renewal that is neither running nor planned in the future (a task that died,
a plan left in the past) is logged, counted and re-planned.

Times are wall-clock timestamps (what the metrics export) read from the
injected ``clock``; waiting uses the event loop's timers, so a test on a
virtual-time loop (``tests/virtual.py``) drives all of it without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Protocol

from exporter.logsetup import log_for

log = logging.getLogger("exporter.scheduler")


async def sleep_until(clock: Callable[[], float], when: float,
                      wake: asyncio.Event | None = None) -> bool:
    """Sleep until wall-clock time ``when``, or until ``wake`` is set.

    Returns True if woken early. Always yields to the event loop at least once,
    so a loop whose due time is already past (zero backoff) cannot starve
    everything else.
    """
    delay = max(when - clock(), 0.0)
    if wake is None:
        await asyncio.sleep(delay)
        return False
    if wake.is_set():
        await asyncio.sleep(0)
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await wake.wait()
    if delay == 0.0:
        await asyncio.sleep(0)
    return wake.is_set()


class StartPacer:
    """Hands out start times at most ``per_second`` apart.

    A start or reload with thousands of credentials spreads their first token
    requests (and their probes' first runs) over seconds instead of firing them
    all in one instant, where they queued behind each other until they timed
    out, and where later runs, anchored on the first, stayed bunched together.
    """

    def __init__(self, per_second: float, clock: Callable[[], float]) -> None:
        self._gap = 1.0 / per_second
        self._clock = clock
        self._next = 0.0

    def take(self, slots: int = 1) -> float:
        """The start time for something that needs ``slots`` start slots."""
        start = max(self._clock(), self._next)
        self._next = start + slots * self._gap
        return start


class Watched(Protocol):
    """What the watchdog checks: one credential's renewal loop."""

    @property
    def name(self) -> str: ...

    def stalled(self, now: float, grace: float) -> str | None:
        """Why the renewal is neither running nor planned in the future, or None."""
        ...

    def restart(self) -> None:
        """Re-plan the renewal now (restarting its task if it ended)."""
        ...


@dataclass(eq=False)
class Watchdog:
    """Finds renewals that stalled, logs and counts each, and re-plans them.

    It should never find one: the loops are built so that they cannot stall.
    It exists because "cannot" is a claim, and a silent stall is the one failure
    this exporter must never have.
    """

    #: The renewals to check, asked for again on every pass (a reload changes them).
    watched: Callable[[], Iterable[Watched]]
    clock: Callable[[], float]
    _: KW_ONLY
    #: Seconds between passes.
    interval: float = 5.0
    #: Seconds a renewal may be overdue before it counts as stalled.
    grace: float = 30.0
    #: Stalls found since start-up (``oauth_exporter_renewal_stalls_total``).
    stalls: int = field(default=0, init=False)

    def check(self) -> int:
        """One pass over every renewal; returns how many stalls it repaired."""
        found = 0
        now = self.clock()
        for item in list(self.watched()):
            why = item.stalled(now, self.grace)
            if why is None:
                continue
            found += 1
            self.stalls += 1
            log_for(log, item.name).error("renewal stalled (%s); re-planning it now", why)
            try:
                item.restart()
            except Exception:
                log_for(log, item.name).exception("could not re-plan the stalled renewal")
        return found

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
            except Exception:  # the watchdog itself must outlive a bug
                log.exception("renewal watchdog: unexpected error")
