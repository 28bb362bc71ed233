"""Choosing an upstream target: health state and the balancing policies.

Passive health marks a target down after ``failures`` errors within ``window`` seconds,
for ``cooldown`` seconds; active health (``gateway.proxy.health``) flips the same flag
from periodic probes; a circuit breaker (``gateway.proxy.breaker``) keeps it out while
open. Consistent policies use rendezvous hashing, so removing a target moves only the
keys it owned. Every policy honours weights: smooth weighted round robin (nginx's), load
per weight for least_conn and random_two (two distinct picks drawn by weight), and
weighted rendezvous hashing (score -weight/ln(h)) for the hash policies.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.proxy.breaker import Breaker


@dataclass(eq=False)
class Target:
    """One upstream address and what this worker knows of its health and load."""

    url: str
    weight: int = 1
    breaker: Breaker | None = None
    in_flight: int = 0
    probe_healthy: bool = True  # from active checks; True when none are configured
    down_until: float = 0.0  # passive: marked down until this monotonic time
    failures: deque[float] = field(default_factory=deque)
    authority: str = field(init=False)
    current: int = 0  # smooth weighted round robin's running score

    def available(self, now: float) -> bool:
        return (
            self.probe_healthy
            and now >= self.down_until
            and (self.breaker is None or self.breaker.allows(now))
        )

    @property
    def load(self) -> float:
        return self.in_flight / self.weight

    def record_failure(self, now: float, threshold: int, window: float, cooldown: float) -> bool:
        """Count a failure; True when it takes the target down."""
        self.failures.append(now)
        while self.failures and self.failures[0] < now - window:
            self.failures.popleft()
        if len(self.failures) >= threshold:
            self.failures.clear()
            self.down_until = now + cooldown
            return True
        return False

    def record_success(self) -> None:
        self.failures.clear()

    def __post_init__(self) -> None:
        # host[:port] of the URL: the Host an upstream gets when the client sent none.
        self.authority = self.url.split("://", 1)[-1].split("/", 1)[0]


def _weight(key: bytes, target: Target) -> float:
    digest = hashlib.blake2b(key + b"\x00" + target.url.encode(), digest_size=8).digest()
    # Weighted rendezvous: each target's share of keys is its share of the weights.
    return -target.weight / math.log((int.from_bytes(digest, "big") + 1) / (2**64 + 1))


def loop_time() -> float:
    """The running loop's clock, which passive health and the circuit breakers record
    on (``UpstreamGroup``), so picks compare like with like; ``time.monotonic`` outside
    a loop."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


class Balancer:
    """Picks a healthy target by policy; ``exclude`` skips targets already tried.
    ``rng`` draws for ``random_two`` (public: a test seeds a running gateway's)."""

    def __init__(
        self,
        targets: Sequence[Target],
        policy: str,
        *,
        clock: Callable[[], float] = loop_time,
        rng: random.Random | None = None,
    ) -> None:
        self.targets = tuple(targets)
        self.policy = policy
        self._clock = clock
        self.rng = rng or random.Random()
        self._cycle = itertools.count()
        self._weighted = len({t.weight for t in self.targets}) > 1

    def pick(
        self, key: str | None = None, exclude: frozenset[Target] = frozenset()
    ) -> Target | None:
        now = self._clock()
        live = [t for t in self.targets if t.available(now) and t not in exclude]
        if not live:
            return None
        chosen = self._choose(live, key)
        if chosen.breaker is not None:
            chosen.breaker.picked(now)
        return chosen

    def _choose(self, live: list[Target], key: str | None) -> Target:
        if self.policy == "round_robin":
            if not self._weighted:
                return live[next(self._cycle) % len(live)]
            total = 0
            for target in live:  # nginx's smooth weighted round robin
                target.current += target.weight
                total += target.weight
            best = max(live, key=lambda t: t.current)
            best.current -= total
            return best
        if self.policy == "least_conn":
            # Ties go round-robin, as nginx does, so an idle pool still shares the load.
            start = next(self._cycle) % len(live)
            return min(live[start:] + live[:start], key=lambda t: t.load)
        if self.policy == "random_two":
            if len(live) == 1:
                return live[0]
            if not self._weighted:
                a, b = self.rng.sample(live, 2)
            else:
                a = self.rng.choices(live, [t.weight for t in live])[0]
                rest = [t for t in live if t is not a]
                b = self.rng.choices(rest, [t.weight for t in rest])[0]
            return a if a.load <= b.load else b
        # ip_hash / header_hash: the highest rendezvous weight among live targets.
        encoded = (key or "").encode()
        return max(live, key=lambda t: _weight(encoded, t))
