"""Rate limits: named rules of leaky buckets (aiolimiter), one bucket per key.

A rule says how fast (``rate`` per ``period``, up to ``burst`` at once) and per what
(client address, a header, the tracking write key, the route, or a mix). Checking never
waits: a request over the limit is answered at once. Buckets live in a bounded LRU per
rule, so a flood of distinct keys costs at most ``max_keys`` buckets.

Limits are enforced per worker process with the rate and burst divided by the number of
workers, so the whole gateway never lets more than the configured rate through when
connections spread over the workers.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiolimiter import AsyncLimiter

from gateway.config import RateLimitRule
from gateway.request.auth import basic_user

log = logging.getLogger("gateway.limits.ratelimit")

MAX_KEY_PART = 256  # longer header values are not keys: a client must not grow our memory
MISSING = "-"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request over the limit, with what Retry-After and RateLimit-* report."""

    limit: int
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int  # seconds until one request fits


class Limiter(Protocol):
    """A keyed limiter. Async so a shared backend (Redis) can implement it later."""

    async def check(self, key: str) -> Refusal | None:
        """None when the request is allowed (and charged)."""

    @property
    def active_keys(self) -> int: ...


class _Bucket(AsyncLimiter):
    """aiolimiter's leaky bucket plus the level it keeps private, for the headers."""

    __slots__ = ()

    def level(self) -> float:
        self._leak()
        return self._level


class LocalLimiter:
    """Leaky buckets in this process, one per key, least recently used evicted first."""

    def __init__(
        self,
        rate: float,
        period: float,
        burst: int,
        max_keys: int,
        on_size: Callable[[int, bool], None] = lambda size, evicted: None,
        *,
        shares: int = 1,
    ) -> None:
        self.burst = burst
        # This bucket is one of ``shares`` equal ones (one per worker): the RateLimit-*
        # figures describe the whole gateway, what a client spreading over them can expect.
        self._shares = shares
        # A bucket of ``burst`` that drains ``rate`` per ``period`` empties in this time.
        self._drain_period = burst * period / rate
        self._per_second = rate / period
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._on_size = on_size

    @property
    def active_keys(self) -> int:
        return len(self._buckets)

    async def check(self, key: str) -> Refusal | None:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.burst, self._drain_period)
            evicted = len(self._buckets) > self._max_keys
            if evicted:
                self._buckets.popitem(last=False)
            self._on_size(len(self._buckets), evicted)
        else:
            self._buckets.move_to_end(key)
        if bucket.has_capacity():
            await bucket.acquire()  # returns at once: has_capacity just said so
            return None
        level = bucket.level()
        return Refusal(
            limit=self.burst * self._shares,
            remaining=max(0, math.floor((self.burst - level) * self._shares)),
            reset=math.ceil(level / self._per_second),
            retry_after=max(1, math.ceil((level + 1 - self.burst) / self._per_second)),
        )


@dataclass(frozen=True, slots=True)
class KeyContext:
    """What a rule's key may be built from."""

    client_ip: str
    route: str
    headers: Callable[[str], str | None]


def _client_ip_part(ipv6_prefix: int) -> Callable[[KeyContext], str]:
    def part(ctx: KeyContext) -> str:
        if ":" in ctx.client_ip and ipv6_prefix < 128:
            # One IPv6 client usually holds a whole /64; per-address keys are free to mint.
            try:
                network = ipaddress.ip_network(f"{ctx.client_ip}/{ipv6_prefix}", strict=False)
            except ValueError:
                return ctx.client_ip
            return str(network)
        return ctx.client_ip

    return part


def _header_part(name: str) -> Callable[[KeyContext], str]:
    def part(ctx: KeyContext) -> str:
        value = ctx.headers(name)
        if not value or len(value) > MAX_KEY_PART:
            return MISSING
        return value

    return part


def _write_key_part(ctx: KeyContext) -> str:
    """The write key of a tracking call: the user of HTTP Basic auth, Segment style."""
    value = ctx.headers("Authorization")
    if not value or len(value) > MAX_KEY_PART * 2:
        return MISSING
    return basic_user(value) or MISSING


def key_function(parts: Sequence[str], ipv6_prefix: int) -> Callable[[KeyContext], str]:
    """Builds a rule's key from its configured parts, e.g. ["client_ip", "header:X-Api-Key"]."""
    getters: list[Callable[[KeyContext], str]] = []
    for part in parts:
        if part == "client_ip":
            getters.append(_client_ip_part(ipv6_prefix))
        elif part == "route":
            getters.append(lambda ctx: ctx.route)
        elif part == "write_key":
            getters.append(_write_key_part)
        else:
            getters.append(_header_part(part.removeprefix("header:")))
    if len(getters) == 1:
        return getters[0]
    return lambda ctx: "|".join(getter(ctx) for getter in getters)


class Rule:
    """A named limit: its key function, exemptions and limiter."""

    def __init__(self, config: RateLimitRule, limiter: Limiter) -> None:
        self.config = config
        self.name = config.name
        self.dry_run = config.dry_run
        self.limiter = limiter
        self.key = key_function(config.key, config.ipv6_prefix)
        self._exempt = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in config.exempt)
        self._dry_run_logged = 0.0
        self._dry_run_hits = 0

    def log_dry_run(self) -> None:
        # At most one line a second per rule: a flood must not become a log flood.
        now = time.monotonic()
        self._dry_run_hits += 1
        if now - self._dry_run_logged >= 1.0:
            log.info(
                "rate limit %s (dry run) would have refused %d request(s)",
                self.name,
                self._dry_run_hits,
            )
            self._dry_run_logged, self._dry_run_hits = now, 0

    def exempts(self, client_ip: str) -> bool:
        if not self._exempt:
            return False
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(address in network for network in self._exempt)


class RouteLimits:
    """The rules of one route, checked in order; every rule is charged."""

    def __init__(
        self, rules: Sequence[Rule], *, flag_only: bool, record: Callable[[str, str], None]
    ) -> None:
        self.rules = tuple(rules)
        self.flag_only = flag_only
        self._record = record

    async def check(self, ctx: KeyContext) -> tuple[str, Refusal] | None:
        """None when allowed; else the rule that refuses with the longest wait."""
        worst: tuple[str, Refusal] | None = None
        for rule in self.rules:
            if rule.exempts(ctx.client_ip):
                self._record(rule.name, "exempt")
                continue
            refusal = await rule.limiter.check(rule.key(ctx))
            if refusal is None:
                self._record(rule.name, "allowed")
            elif rule.dry_run:
                self._record(rule.name, "dry_run_limited")
                rule.log_dry_run()
            else:
                self._record(rule.name, "limited")
                if worst is None or refusal.retry_after > worst[1].retry_after:
                    worst = (rule.name, refusal)
        return worst


def local_limiter_for(
    config: RateLimitRule, workers: int, on_size: Callable[[int, bool], None]
) -> LocalLimiter:
    """This worker's share of a rule: rate and burst divided by the worker count."""
    share = max(1, math.floor(config.effective_burst / workers))
    return LocalLimiter(
        rate=config.rate / workers,
        period=config.period,
        burst=share,
        max_keys=config.max_keys,
        on_size=on_size,
        # Reported as the configured burst when it divides evenly (10 over 2 workers: 10,
        # not 5); otherwise as what the shares really add up to.
        shares=workers,
    )
