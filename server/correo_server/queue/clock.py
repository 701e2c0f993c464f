"""The queue's time source, injected everywhere a decision depends on time.

Times are wall-clock seconds since the epoch (they are written to the spool and
shown to people).  :class:`SystemClock` is the real one; :class:`FakeClock`
lets tests run the whole 4 hours / 5 days retry cycle in milliseconds: time
only moves when the test calls :meth:`FakeClock.advance`, and everything
sleeping on the clock wakes up when its deadline has passed.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class FakeClock:
    """A clock that stands still until told to move."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    def set(self, when: float) -> None:
        """Move to ``when`` (never backwards) and wake every sleeper now due."""
        self._now = max(self._now, float(when))
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
