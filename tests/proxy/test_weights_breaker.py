"""Weighted upstreams in every policy and the circuit breaker, as plain objects and
through real backends."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from gateway.config import CircuitBreaker
from gateway.proxy.balancer import Balancer, Target
from gateway.proxy.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from tests.backends import backends
from tests.client import fetch
from tests.clock import jump_clock
from tests.support import base_config, in_process_gateway, with_routes


@pytest.mark.parametrize("policy", ["round_robin", "least_conn", "random_two", "ip_hash"])
def test_each_policy_splits_1000_requests_by_weight_within_5_percent(policy: str) -> None:
    targets = [Target("http://a", 1), Target("http://b", 3), Target("http://c", 6)]
    balancer = Balancer(targets, policy, rng=random.Random(1))  # random_two's draws, fixed
    picks: Counter[str] = Counter()
    for i in range(1000):
        target = balancer.pick(f"10.0.{i // 250}.{i % 250}")
        assert target is not None
        if policy == "least_conn":
            target.in_flight += 1  # held: least_conn spreads by load per weight
        picks[target.url] += 1
    for target, share in zip(targets, (0.1, 0.3, 0.6), strict=True):
        assert abs(picks[target.url] - 1000 * share) <= 50, (policy, picks)


def test_smooth_round_robin_interleaves_rather_than_bursts() -> None:
    balancer = Balancer([Target("http://a", 5), Target("http://b", 1), Target("http://c", 1)],
                        "round_robin")  # fmt: skip
    order = "".join((balancer.pick() or Target("x")).url[-1] for _ in range(7))
    assert order == "aabacaa"  # nginx's sequence for 5:1:1


def test_breaker_opens_on_the_error_ratio_probes_once_and_closes() -> None:
    config = CircuitBreaker(error_ratio=0.5, min_requests=4, window=10, open_seconds=5)
    breaker = Breaker(config, "http://a")
    for failed in (False, True, False):
        breaker.record(0.0, failed)
    assert breaker.state == CLOSED  # 3 outcomes: fewer than min_requests
    breaker.record(1.0, True)  # 2 of 4 failed
    assert (breaker.state, breaker.allows(5.9)) == (OPEN, False)
    assert breaker.allows(6.0) and breaker.state == HALF_OPEN
    breaker.picked(6.0)
    assert not breaker.allows(6.1)  # one probe at a time
    breaker.record(6.2, True)
    assert (breaker.state, breaker.allows(11.1)) == (OPEN, False)  # open again
    assert breaker.allows(11.2)
    breaker.picked(11.2)
    assert breaker.allows(16.3)  # a probe that never told gives way to another
    breaker.picked(16.3)
    breaker.record(16.4, False)
    assert (breaker.state, breaker.allows(16.5)) == (CLOSED, True)
    for t in range(10):  # old outcomes leave the window: 1 failure in 10 s never opens
        breaker.record(20.0 + t * 11, t % 2 == 0)
    assert breaker.state == CLOSED


@pytest.mark.asyncio_loop  # the breakers' window and open time pass on a clock moved by hand
async def test_weighted_canary_and_circuit_breaker_through_real_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = jump_clock(monkeypatch)
    async with backends("stable", "canary") as (stable, canary):
        proxy = {"upstreams": [{"url": stable.url, "weight": 3}, canary.url],
                 "circuit_breaker": {"min_requests": 4, "error_ratio": 0.5, "open_seconds": 30,
                                     "window": 10},
                 "passive_health": {"failures": 1000}}  # fmt: skip
        config = with_routes(base_config(tmp_path), {"name": "app", "proxy": proxy})
        async with in_process_gateway(config, tmp_path) as gw:
            for _ in range(400):
                assert (await fetch(gw.url("/x")))[0] == 200
            assert (stable.hits, canary.hits) == (300, 100)
            clock.advance(10.1)  # the successes leave the breakers' window
            stable.health_status = canary.health_status = 500
            statuses = [(await fetch(gw.url("/health")))[0] for _ in range(10)]
            refused = await fetch(gw.url("/health"))
            stable.health_status = canary.health_status = 200
            clock.advance(29)
            still_open = (await fetch(gw.url("/health")))[0]
            clock.advance(1.1)  # open_seconds over: half-open, one probe each
            probes = [(await fetch(gw.url("/health")))[0] for _ in range(4)]
    # Each target opens after its 4th answer, half of them 5xx: then 503 without asking.
    assert statuses.count(500) == 8 and statuses[8:] == [503, 503]
    assert (refused[0], refused[2]) == (503, b"503 Service Unavailable: no healthy upstream\n")
    assert still_open == 503
    assert probes == [200] * 4  # probed, closed, serving
