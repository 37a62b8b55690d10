"""The per-host limiter, on a virtual clock: the preset's real 10/60 s budget."""

from __future__ import annotations

import asyncio

from exporter.presets import PRESETS, RateLimit
from exporter.ratelimit import HostLimiter, margin
from tests.virtual import run_virtual


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def max_in_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_fifty_credentials_share_ten_per_minute() -> None:
    limit = PRESETS["simpledocs"].token_rate_limit
    assert limit == RateLimit(10, 60.0)
    vt = VirtualTime()
    limiter = HostLimiter(clock=vt.clock, sleep=vt.sleep)
    sent: list[float] = []

    async def credential() -> None:
        for _ in range(3):  # three renewals each
            await limiter.acquire("api.simpledocs.example", limit)
            sent.append(vt.now)

    async def main() -> None:
        await asyncio.gather(*(credential() for _ in range(50)))

    asyncio.run(main())
    assert len(sent) == 150
    assert max_in_window(sent, 60.0) == 10
    # ...and it is no slower than it must be: 150 requests take 14 full windows.
    assert sent[-1] <= 14 * (60.0 + margin(limit)) + 1e-6


def test_hosts_do_not_share_budgets_and_none_means_unlimited() -> None:
    vt = VirtualTime()
    limiter = HostLimiter(clock=vt.clock, sleep=vt.sleep)
    limit = RateLimit(2, 10.0)

    async def main() -> list[float]:
        waits = []
        for host in ("a", "a", "b", "b"):
            waits.append(await limiter.acquire(host, limit))
        for _ in range(100):
            waits.append(await limiter.acquire("c", None))
        return waits

    waits = asyncio.run(main())
    assert waits == [0.0] * 104
    assert limiter.wait_time("a", limit) > 9.0


def test_retry_after_closes_the_host() -> None:
    vt = VirtualTime()
    limiter = HostLimiter(clock=vt.clock, sleep=vt.sleep)
    limiter.close_until("h", 30.0)
    waited = asyncio.run(limiter.acquire("h", None))
    assert waited == 30.0
    assert limiter.wait_time("h", None) == 0.0


def _arrivals(use_slot: bool, delays: list[float]) -> list[float]:
    """50 credentials x 3 requests through one limiter, on a virtual-time loop;
    each request reaches the server ``delays[i]`` after it is sent (a busy
    machine, a slow network) and is answered when it arrives. Returns the
    server's arrival times."""
    limit = RateLimit(10, 60.0)
    arrivals: list[float] = []
    delay = iter(delays)

    async def main() -> None:
        limiter = HostLimiter()  # the loop's (virtual) clock

        async def request() -> None:
            await asyncio.sleep(next(delay))
            arrivals.append(asyncio.get_running_loop().time())

        async def credential() -> None:
            for _ in range(3):
                if use_slot:
                    async with limiter.slot("h", limit):
                        await request()
                else:
                    await limiter.acquire("h", limit)
                    await request()

        await asyncio.gather(*(credential() for _ in range(50)))

    run_virtual(main())
    return sorted(arrivals)


def test_a_request_is_logged_when_answered_so_late_arrivals_never_overrun() -> None:
    # The 10th request takes 2 s to reach the server, every other one arrives at once.
    delays = [2.0 if i == 9 else 0.0 for i in range(150)]
    arrivals = _arrivals(True, delays)
    assert len(arrivals) == 150
    assert max_in_window(arrivals, 60.0) <= 10
    # Logged at the send time instead, late arrivals crowd into the next window:
    # the margin cannot absorb a delay longer than itself.
    assert max_in_window(_arrivals(False, delays), 60.0) > 10
