"""Who gets which variant: a visitor's bucket is the first 64 bits of
SHA-256(salt ":" visitor id) as a fraction of 2^64, so every worker and every instance
agrees with no shared state. Each variant owns a range starting where the variants
before it would end at full allocation, as long as its weight: raising an experiment's
allocation (every weight by the same factor) enrols new visitors without moving anyone,
lowering it un-enrols only the excess; changing the split between variants moves only
the visitors between the old and new boundaries."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.bounded import Bounded
from gateway.config.experiments import Experiment


def bucket(salt: str, visitor: str) -> float:
    digest = hashlib.sha256(f"{salt}:{visitor}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True, slots=True)
class Decision:
    variant: str
    reason: str  # assigned, override, stopped, kept (paused or outside its window)


class Assigner:
    """One experiment's ranges and rules; ``decide`` for one request."""

    def __init__(self, experiment: Experiment, clock: Callable[[], float] = time.time) -> None:
        self.experiment = experiment
        self.salt = experiment.salt or experiment.name
        self.names = frozenset(variant.name for variant in experiment.variants)
        allocation = experiment.allocation
        ranges, start = [], 0.0
        for variant in experiment.variants:
            split = variant.weight / allocation
            ranges.append((start, start + split * allocation, variant.name))
            start += split
        self.ranges = tuple(ranges)
        self.start, self.stop = experiment.window()
        self._clock = clock
        # Read per request: plain attributes, not the frozen model's.
        self.name, self._status = experiment.name, experiment.status
        self._winner = experiment.winner or ""
        self._timed = self.start is not None or self.stop is not None
        self._known: Bounded[str, str | None] = Bounded(65536)
        self._assigned = {name: Decision(name, "assigned") for name in self.names}

    def _open(self) -> bool:
        now = self._clock()
        return (self.start is None or now >= self.start) and (self.stop is None or now < self.stop)

    def variant_of(self, visitor: str) -> str | None:
        """The variant the visitor's bucket falls in; None: not enrolled. Kept per
        visitor: a returning visitor's requests skip the hash."""
        found = self._known.get(visitor, "")
        if found != "":
            return found
        point = bucket(self.salt, visitor)
        for low, high, name in self.ranges:
            if low <= point < high:
                found = name
                break
        else:
            found = None
        self._known.put(visitor, found)
        return found

    def decide(
        self, visitor: str | None, held: Mapping[str, str], asked: str | None = None
    ) -> Decision | None:
        """``held``: the visitor's assignments as their cookie says; ``asked``: a QA
        override already allowed. None: the visitor is not in the experiment."""
        if self._status == "stopped":
            return Decision(self._winner, "stopped")
        if asked is not None and asked in self.names:
            return Decision(asked, "override")
        if self._status == "paused" or (self._timed and not self._open()):
            kept = held.get(self.name)
            return Decision(kept, "kept") if kept in self.names else None
        if visitor is None:
            return None
        variant = self.variant_of(visitor)
        return self._assigned[variant] if variant is not None else None
