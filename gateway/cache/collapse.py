"""Request collapsing: concurrent misses for one key wait for the first one's upstream
request (Varnish's busy object and waiting list) instead of all going upstream, for a
bounded time; an answer that turns out not storable releases them at once, and marks
the key so later misses do not queue behind it (Varnish's hit-for-miss)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

MAX_MARKS = 10_000  # uncacheable keys remembered; the oldest half forgotten past it


class Fill:
    """One key's miss in progress: ``done`` resolves True when its answer was stored,
    False when it was not (or the fetch failed)."""

    __slots__ = ("done", "waiters")

    def __init__(self) -> None:
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.waiters = 0

    def finish(self, stored: bool) -> None:
        if not self.done.done():
            self.done.set_result(stored)


class Collapser:
    """The fills in progress of one worker, and the keys not worth waiting for."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._fills: dict[str, Fill] = {}
        self._uncacheable: dict[str, float] = {}  # key -> until when
        self._clock = clock

    def uncacheable(self, key: str) -> bool:
        until = self._uncacheable.get(key)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._uncacheable[key]
        return False

    def mark_uncacheable(self, key: str, seconds: float) -> None:
        if seconds <= 0:
            return
        if len(self._uncacheable) >= MAX_MARKS:
            for old in list(self._uncacheable)[: MAX_MARKS // 2]:
                del self._uncacheable[old]
        self._uncacheable[key] = self._clock() + seconds

    def waiting(self) -> int:
        """Requests waiting for a fill, all keys together."""
        return sum(fill.waiters for fill in self._fills.values())

    def busy(self, key: str) -> Fill | None:
        return self._fills.get(key)

    def start(self, key: str) -> Fill:
        fill = self._fills[key] = Fill()
        return fill

    def end(self, key: str, fill: Fill, stored: bool) -> None:
        """The fill is over: its waiters look again (stored) or fetch for themselves."""
        fill.finish(stored)
        if self._fills.get(key) is fill:
            del self._fills[key]

    async def wait(self, fill: Fill, limit: float) -> bool:
        """Whether ``fill`` stored its answer within ``limit`` seconds."""
        fill.waiters += 1
        try:
            async with asyncio.timeout(limit):
                return await asyncio.shield(fill.done)
        except TimeoutError:
            return False
        finally:
            fill.waiters -= 1
