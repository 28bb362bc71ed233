"""A circuit breaker per upstream target (Traefik's CircuitBreaker, Envoy's outlier
detection): closed, it counts outcomes over a sliding window; once at least
``min_requests`` have a failure share of ``error_ratio`` it opens, and the target gets
no requests for ``open_seconds``; then it is half-open: one request goes through as a
probe, whose success closes the breaker and whose failure opens it again.
"""

from __future__ import annotations

import logging
from collections import deque

from gateway.config import CircuitBreaker

log = logging.getLogger("gateway.proxy")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class Breaker:
    __slots__ = (
        "_config", "_failures", "_outcomes", "_url", "opened_until", "probe_at", "probing",
        "state",
    )  # fmt: skip

    def __init__(self, config: CircuitBreaker, url: str) -> None:
        self._config = config
        self._url = url
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed)
        self._failures = 0
        self.state = CLOSED
        self.opened_until = 0.0
        self.probing = False
        self.probe_at = 0.0

    def allows(self, now: float) -> bool:
        """Whether the target may be picked now (a half-open one only for its probe)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and now >= self.opened_until:
            self.state, self.probing = HALF_OPEN, False
        if self.probing and now - self.probe_at > self._config.open_seconds:
            self.probing = False  # the probe never told (its client went away): another
        return self.state == HALF_OPEN and not self.probing

    def picked(self, now: float) -> None:
        if self.state == HALF_OPEN:
            self.probing = True  # every other request waits for this one's outcome
            self.probe_at = now

    def record(self, now: float, failed: bool) -> None:
        config = self._config
        if self.state == HALF_OPEN:
            if failed:
                self._open(now, "its probe failed")
            else:
                log.warning("upstream %s: circuit closed (probe succeeded)", self._url)
                self.state, self.probing = CLOSED, False
                self._outcomes.clear()
                self._failures = 0
            return
        if self.state == OPEN:
            return  # answers to requests sent before it opened
        outcomes = self._outcomes
        outcomes.append((now, failed))
        self._failures += failed
        while outcomes and outcomes[0][0] < now - config.window:
            self._failures -= outcomes.popleft()[1]
        if len(outcomes) >= config.min_requests and (
            self._failures >= config.error_ratio * len(outcomes)
        ):
            self._open(now, f"{self._failures} of {len(outcomes)} requests failed")

    def _open(self, now: float, why: str) -> None:
        log.warning(
            "upstream %s: circuit open for %ss (%s)", self._url, self._config.open_seconds, why
        )
        self.state, self.probing = OPEN, False
        self.opened_until = now + self._config.open_seconds
        self._outcomes.clear()
        self._failures = 0
