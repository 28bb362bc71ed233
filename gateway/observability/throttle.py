"""A log line a hostile client can cause thousands of times a second, written once per
episode: the first occurrence in full, then one line per ``interval`` with how many
more there were, so a flood cannot fill the disk or drown the log (issue 27, D7)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable


class ThrottledLog:
    """Logs the first call at once; calls within ``interval`` s of it are counted and
    reported in one summary line when the interval ends. The next call after a quiet
    interval starts a new episode."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        interval: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._logger = logger
        self._what = what
        self._interval = interval
        self._clock = clock
        self._opened: float | None = None  # when the current episode's window opened
        self._count = 0  # calls after the first in this window
        self._last = ""  # the latest suppressed message, for the summary
        self._summary: asyncio.TimerHandle | None = None

    def __call__(self, message: str, *args: object) -> None:
        now = self._now()
        if self._opened is not None and now - self._opened < self._interval:
            self._count += 1
            self._last = message % args if args else message
            if self._summary is None:
                loop = asyncio.get_running_loop()
                self._summary = loop.call_later(
                    self._interval - (now - self._opened), self.summarize
                )
            return
        self.summarize()
        self._opened = now
        self._logger.info(message, *args)

    def summarize(self) -> None:
        """Write the count of the window that ended (also called by its timer)."""
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        if self._count:
            self._logger.info(
                "%d more %s in %g s; the last: %s",
                self._count,
                self._what,
                self._interval,
                self._last,
            )
            # The episode goes on: the next window opens now.
            self._opened, self._count = self._now(), 0
        else:
            self._opened = None

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return asyncio.get_running_loop().time()
