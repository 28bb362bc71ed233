"""Rate limit decisions on a fake loop clock: exact allow/deny sequences and header values."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
from multidict import CIMultiDict

from gateway.config import RateLimitRule
from gateway.limits.ratelimit import (
    KeyContext,
    LocalLimiter,
    Refusal,
    RouteLimits,
    Rule,
    key_function,
    local_limiter_for,
)

# The fake clock replaces loop.time, which uvloop does not allow.
pytestmark = pytest.mark.asyncio_loop


class FakeClock:
    """Stands in for loop.time(), which aiolimiter reads; tests move it by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clock(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeClock]:
    fake = FakeClock()
    # Nothing in these tests waits on a timer, so freezing the loop clock is safe.
    monkeypatch.setattr(asyncio.get_running_loop(), "time", fake)
    yield fake


def ctx(ip: str = "192.0.2.1", route: str = "r", **headers: str) -> KeyContext:
    return KeyContext(ip, route, CIMultiDict(headers).get)


async def allowed(limiter: LocalLimiter, key: str = "k", n: int = 1) -> list[bool]:
    return [await limiter.check(key) is None for _ in range(n)]


async def test_burst_then_steady_rate(clock: FakeClock) -> None:
    limiter = LocalLimiter(rate=2, period=1, burst=3, max_keys=10)
    assert await allowed(limiter, n=4) == [True, True, True, False]
    clock.now += 0.5  # one request's worth drains at 2/s
    assert await allowed(limiter, n=2) == [True, False]
    clock.now += 2.0  # a full bucket drains in 1.5 s
    assert await allowed(limiter, n=4) == [True, True, True, False]


async def test_refusal_reports_header_values(clock: FakeClock) -> None:
    limiter = LocalLimiter(rate=1, period=60, burst=2, max_keys=10)
    assert await allowed(limiter, n=2) == [True, True]
    assert await limiter.check("k") == Refusal(limit=2, remaining=0, reset=120, retry_after=60)
    clock.now += 90  # 1.5 requests' worth drained: one fits, half of the next
    assert await allowed(limiter) == [True]
    assert await limiter.check("k") == Refusal(limit=2, remaining=0, reset=90, retry_after=30)


async def test_retry_after_rounds_up_to_whole_seconds(clock: FakeClock) -> None:
    limiter = LocalLimiter(rate=1, period=60, burst=1, max_keys=10)
    assert await allowed(limiter) == [True]
    clock.now += 30
    assert await limiter.check("k") == Refusal(limit=1, remaining=0, reset=30, retry_after=30)
    clock.now += 29.5
    assert await limiter.check("k") == Refusal(limit=1, remaining=0, reset=1, retry_after=1)
    clock.now += 0.5
    assert await allowed(limiter) == [True]


async def test_keys_have_separate_buckets(clock: FakeClock) -> None:
    limiter = LocalLimiter(rate=1, period=1, burst=1, max_keys=10)
    assert await allowed(limiter, "a", 2) == [True, False]
    assert await allowed(limiter, "b", 1) == [True]


async def test_lru_evicts_least_recently_used_key(clock: FakeClock) -> None:
    sizes: list[tuple[int, bool]] = []
    limiter = LocalLimiter(1, 60, 1, max_keys=2, on_size=lambda n, e: sizes.append((n, e)))
    await allowed(limiter, "a")
    await allowed(limiter, "b")
    await allowed(limiter, "a")  # "a" is now the most recent
    await allowed(limiter, "c")  # evicts "b"
    assert sizes == [(1, False), (2, False), (2, True)]
    assert await allowed(limiter, "a") == [False]  # kept its empty bucket
    assert await allowed(limiter, "b") == [True]  # came back fresh


async def test_flood_of_distinct_keys_stays_within_bound(clock: FakeClock) -> None:
    limiter = LocalLimiter(1, 1, 1, max_keys=100)
    for i in range(10_000):
        await limiter.check(f"key-{i}")
    assert limiter.active_keys == 100


async def test_workers_share_the_configured_rate(clock: FakeClock) -> None:
    rule = RateLimitRule(name="r", rate=10, burst=10)
    limiter = local_limiter_for(rule, workers=2, on_size=lambda n, e: None)
    assert await allowed(limiter, n=6) == [True] * 5 + [False]
    clock.now += 0.2  # 5/s per worker: one request's worth
    assert await allowed(limiter, n=2) == [True, False]


def test_default_burst_is_one_period_of_requests() -> None:
    assert RateLimitRule(name="r", rate=2.5).effective_burst == 3
    assert RateLimitRule(name="r", rate=0.1, period=60).effective_burst == 1


def test_ipv6_clients_are_grouped_by_prefix() -> None:
    key = key_function(["client_ip"], ipv6_prefix=64)
    assert (
        key(ctx("2001:db8:1:2:aaaa::1")) == key(ctx("2001:db8:1:2:bbbb::2")) == "2001:db8:1:2::/64"
    )
    assert key(ctx("192.0.2.7")) == "192.0.2.7"
    assert key_function(["client_ip"], 128)(ctx("2001:db8::1")) == "2001:db8::1"


def test_header_key_missing_or_oversized_shares_one_bucket() -> None:
    key = key_function(["header:X-Api-Key"], 64)
    assert key(ctx(**{"X-Api-Key": "abc"})) == "abc"
    assert key(ctx()) == "-"
    assert key(ctx(**{"X-Api-Key": "x" * 1000})) == "-"


def test_write_key_from_basic_auth() -> None:
    key = key_function(["write_key"], 64)
    token = base64.b64encode(b"wk_123:").decode()
    assert key(ctx(Authorization=f"Basic {token}")) == "wk_123"
    assert key(ctx(Authorization="Basic !!!not-base64")) == "-"
    assert key(ctx(Authorization="Bearer abc")) == "-"
    assert key(ctx()) == "-"


def test_combined_key() -> None:
    key = key_function(["client_ip", "route", "header:X-Api-Key"], 64)
    assert key(ctx("192.0.2.1", "api", **{"X-Api-Key": "k"})) == "192.0.2.1|api|k"


async def test_route_limits_exempt_dry_run_and_longest_wait(clock: FakeClock) -> None:
    records: list[tuple[str, str]] = []
    fast = Rule(RateLimitRule(name="fast", rate=1, burst=1), LocalLimiter(1, 1, 1, 10))
    slow = Rule(RateLimitRule(name="slow", rate=1, period=60, burst=1), LocalLimiter(1, 60, 1, 10))
    dry = Rule(
        RateLimitRule(name="dry", rate=1, burst=1, dry_run=True, exempt=("10.0.0.0/8",)),
        LocalLimiter(1, 1, 1, 10),
    )
    limits = RouteLimits([fast, slow, dry], flag_only=False, record=lambda *r: records.append(r))
    assert await limits.check(ctx("192.0.2.1")) is None
    assert await limits.check(ctx("192.0.2.1")) == (
        "slow",
        Refusal(limit=1, remaining=0, reset=60, retry_after=60),
    )
    assert await limits.check(ctx("10.1.2.3")) is None  # fresh keys; exempt from "dry"
    assert records[:6] == [
        ("fast", "allowed"), ("slow", "allowed"), ("dry", "allowed"),
        ("fast", "limited"), ("slow", "limited"), ("dry", "dry_run_limited"),
    ]  # fmt: skip
    assert records[-1] == ("dry", "exempt")


async def test_headers_report_the_whole_gateways_limit_not_one_workers_share(
    clock: FakeClock,
) -> None:
    # Fault run: with 2 workers a burst of 10 was reported as RateLimit-Limit 5.
    rule = RateLimitRule(name="r", rate=10, period=1, burst=10)
    limiter = local_limiter_for(rule, 2, lambda size, evicted: None)
    assert await allowed(limiter, n=5) == [True] * 5
    refusal = await limiter.check("k")
    assert refusal is not None
    assert (refusal.limit, refusal.remaining, refusal.reset, refusal.retry_after) == (10, 0, 1, 1)
