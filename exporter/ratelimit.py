"""One token-request budget per token host, shared by every credential on it.

Providers limit token requests per client IP (SimpleDocs: 10 a minute), not
per credential, so fifty credentials at one host share one budget. The limiter
keeps a sliding-window log of the requests actually sent to each host: a
request goes out only while fewer than ``requests`` were sent in the last
``period`` (plus a small margin for network delay, so the server's window,
which sees our requests a little later, never counts one too many). Waiters
queue in arrival order on a per-host lock. A 429 with ``Retry-After`` closes
the whole host until then, since the server's budget is per IP.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

from exporter.presets import RateLimit


def margin(limit: RateLimit) -> float:
    """Extra spacing that absorbs network delay between us and the server's clock."""
    return 0.02 * limit.period + 0.05


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
        self._sent: dict[str, deque[float]] = {}
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
                while sent and sent[0] <= now - window:
                    sent.popleft()
                if len(sent) >= limit.requests:
                    wait = max(wait, sent[-limit.requests] + window - now)
        return max(wait, 0.0)

    async def acquire(self, host: str, limit: RateLimit | None) -> float:
        """Wait for a slot at ``host`` and take it; return the seconds waited."""
        start = self._clock()
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:
            while (wait := self.wait_time(host, limit)) > 0:
                await self._sleep(wait)
            if limit is not None:
                self._sent.setdefault(host, deque()).append(self._clock())
        return self._clock() - start
