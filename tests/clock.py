"""A clock moved by hand for tests on asyncio's loop (``@pytest.mark.asyncio_loop``:
uvloop's ``time`` cannot be replaced). ``loop.time()`` becomes the real monotonic time
plus every jump made so far, so timers, timeouts and whatever else reads the loop's clock
see that much time pass at once, while real waits (a helper's ``asyncio.timeout``) still
end. A frozen clock moves only by jumps: nothing timed happens unless the test says so,
and the test must wait by yielding to the loop (``settles``), not on a timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest


class LoopClock:
    def __init__(self, *, frozen: bool = False) -> None:
        self.offset = 0.0
        self._frozen_at = time.monotonic() if frozen else None

    def __call__(self) -> float:
        base = time.monotonic() if self._frozen_at is None else self._frozen_at
        return base + self.offset

    def advance(self, seconds: float) -> None:
        """Jump ahead; timers now due run as soon as the test next yields to the loop."""
        self.offset += seconds

    def thaw(self) -> None:
        """A frozen clock follows real time again from where it stands (a gateway's
        shutdown waits on timers)."""
        if self._frozen_at is not None:
            self.offset += self._frozen_at - time.monotonic()
            self._frozen_at = None


def jump_clock(monkeypatch: pytest.MonkeyPatch, *, frozen: bool = False) -> LoopClock:
    """The running loop's clock, replaced (and put back at the end of the test)."""
    clock = LoopClock(frozen=frozen)
    monkeypatch.setattr(asyncio.get_running_loop(), "time", clock)
    return clock


async def settles(check: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Until ``check()`` holds, yielding to the loop between tries (sockets, subprocesses
    and threads are served; no timer is waited on: for a frozen clock). Fails after
    ``limit`` seconds of real time."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit:g} s: {what}")
        await asyncio.sleep(0)


async def turns(count: int = 10) -> None:
    """Let the loop go round ``count`` times: what a timer due now sets off has run."""
    for _ in range(count):
        await asyncio.sleep(0)
