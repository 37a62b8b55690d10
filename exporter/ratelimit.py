"""One token-request budget per token host, shared by every credential on it.

Providers limit token requests per client IP (SimpleDocs: 10 a minute), not
per credential, so fifty credentials at one host share one budget. The limiter
keeps a sliding-window log of the requests sent to each host: a request goes
out only while fewer than ``requests`` were sent in the last ``period`` (plus a
small margin). Waiters queue in arrival order on a per-host lock. A 429 with
``Retry-After`` closes the whole host until then, since the server's budget is
per IP.

The server counts a request when it *arrives*, which is some time after we
send it: on a busy machine or a slow network, easily longer than any fixed
margin. So a request taken with ``slot()`` is logged as in flight until its
answer comes back, and then at the time the answer came: the server saw it
between sending and answering, so a request sent a full window after that
answer can never share the server's window with it, however late either
arrived. While one is in flight it counts as happening now.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from exporter.presets import RateLimit


def margin(limit: RateLimit) -> float:
    """Extra spacing that absorbs the difference between our clock and the server's."""
    return 0.02 * limit.period + 0.05


class _Sent:
    """One request in a host's log: when it was sent, or answered once it has been."""

    __slots__ = ("at", "in_flight")

    def __init__(self, at: float, in_flight: bool) -> None:
        self.at = at
        self.in_flight = in_flight


class HostLimiter:
    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        # By default the event loop's own clock: monotonic, and the clock its
        # sleeps are measured by (a virtual one in tests).
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._sleep = sleep
        self._sent: dict[str, deque[_Sent]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed_until: dict[str, float] = {}

    def close_until(self, host: str, seconds: float) -> None:
        """Send nothing to ``host`` for ``seconds`` (the server asked us to wait)."""
        until = self._clock() + seconds
        if until > self._closed_until.get(host, 0.0):
            self._closed_until[host] = until

    def wait_time(self, host: str, limit: RateLimit | None) -> float:
        """How long a request to ``host`` would wait now (0: it may go at once)."""
        now = self._clock()
        wait = self._closed_until.get(host, 0.0) - now
        if limit is not None:
            sent = self._sent.get(host)
            if sent is not None:
                window = limit.period + margin(limit)
                # Answered requests older than the window no longer count.
                kept = [s for s in sent if s.in_flight or s.at > now - window]
                if len(kept) != len(sent):
                    sent.clear()
                    sent.extend(kept)
                if len(sent) >= limit.requests:
                    times = sorted(now if s.in_flight else s.at for s in sent)
                    wait = max(wait, times[-limit.requests] + window - now)
        return max(wait, 0.0)

    async def _take(self, host: str, limit: RateLimit | None, in_flight: bool) -> tuple[
            float, _Sent | None]:
        start = self._clock()
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            while (wait := self.wait_time(host, limit)) > 0:
                await self._sleep(wait)
            entry = None
            if limit is not None:
                entry = _Sent(self._clock(), in_flight)
                self._sent.setdefault(host, deque()).append(entry)
        return self._clock() - start, entry

    async def acquire(self, host: str, limit: RateLimit | None) -> float:
        """Wait for a slot at ``host`` and take it, logged at the send time;
        return the seconds waited. ``slot()`` is better where the answer is awaited."""
        waited, _ = await self._take(host, limit, in_flight=False)
        return waited

    @asynccontextmanager
    async def slot(self, host: str, limit: RateLimit | None) -> AsyncIterator[float]:
        """Wait for a slot at ``host``; hold it while the request is in flight.

        Yields the seconds waited. On exit, however the request ended, the
        request is logged at the time its answer came (or it failed).
        """
        waited, entry = await self._take(host, limit, in_flight=True)
        try:
            yield waited
        finally:
            if entry is not None:
                entry.at = self._clock()
                entry.in_flight = False
