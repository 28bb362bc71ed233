"""Liveness and readiness: what the ``health`` and ``ready`` endpoints report."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class State(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    detail: str


Check = Callable[[], CheckResult]


class Readiness:
    """Ready means serving and every registered check (a required sink, say) is healthy."""

    def __init__(self) -> None:
        self.state = State.STARTING
        self._checks: dict[str, Check] = {}

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    def report(self) -> tuple[bool, dict[str, object]]:
        results = {name: check() for name, check in self._checks.items()}
        ready = self.state is State.SERVING and all(r.ok for r in results.values())
        body: dict[str, object] = {
            "status": "ready" if ready else "not ready",
            "state": self.state.value,
            "checks": {name: {"ok": r.ok, "detail": r.detail} for name, r in results.items()},
        }
        return ready, body
