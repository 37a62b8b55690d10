"""An asyncio event loop on virtual time, for exact tests of schedules.

The loop's clock (``loop.time()``, used by ``asyncio.sleep``, ``asyncio.timeout``
and every timer) only moves when the loop has nothing left to do: then it jumps
straight to the next timer instead of waiting for it. A test of ten minutes of
renewals runs in the time the work itself takes, whatever else the machine is
doing, and gives the same result every time. Nothing is patched: the exporter's
own code sleeps with ``asyncio.sleep`` and reads the wall clock through the
injected ``clock``, which here is ``VirtualClock.time`` (an epoch plus the loop's
virtual time).

Only in-process I/O works on this loop (``httpx.MockTransport``); a real socket
would wait on wall-clock time the loop does not see.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

#: The wall-clock time virtual time 0 stands for (2026-06-01T00:00:00Z).
EPOCH = 1_780_272_000.0
#: Virtual time every turn of the loop costs, as work costs real time: a loop that
#: is never idle (a retry with zero backoff) still lets time, and timers, move on.
TURN = 1e-6


class _JumpingSelector(selectors.SelectSelector):
    """A selector that, asked to wait, moves virtual time on instead."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        assert self.loop is not None
        ready = super().select(0)
        if ready or timeout is None or timeout <= TURN:
            if timeout is None and not ready:
                raise RuntimeError("virtual loop: nothing scheduled and nothing ready (deadlock)")
            self.loop.virtual_now += TURN
            return ready
        self.loop.virtual_now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _JumpingSelector()
        super().__init__(selector)
        selector.loop = self
        self.virtual_now = 0.0

    def time(self) -> float:
        return self.virtual_now


class VirtualClock:
    """Wall-clock time on a virtual loop: what the exporter's ``clock`` returns."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop

    def time(self) -> float:
        return EPOCH + self._loop.virtual_now

    def monotonic(self) -> float:
        return self._loop.virtual_now


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def clock_of_running_loop() -> VirtualClock:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop), "not on a virtual-time loop"
    return VirtualClock(loop)
