"""Rate limits and the concurrency cap as a client sees them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.client import fetch, happens
from tests.support import base_config, in_process_gateway, with_routes

# One request an hour: nothing refills while a test runs, so every header value is exact.
HOURLY = {"name": "hourly", "rate": 1, "period": 3600, "burst": 2}


def limited_config(
    tmp_path: Path, rule: dict[str, Any] | None = None, **route: Any
) -> dict[str, Any]:
    config = with_routes(
        base_config(tmp_path),
        {"name": "api", "rate_limits": ["hourly"], "respond": {"body": "ok"}, **route},
    )
    config["rate_limits"] = {"rules": [dict(rule or HOURLY)]}  # a copy: tests change theirs
    return config


async def statuses(url: str, n: int, **kwargs: Any) -> list[int]:
    return [(await fetch(url, **kwargs))[0] for _ in range(n)]


async def metrics(gw: Any) -> str:
    return (await fetch(gw.url("/_gateway/metrics", listener="admin")))[2].decode()


async def test_over_the_limit_is_429_with_headers(tmp_path: Path) -> None:
    async with in_process_gateway(limited_config(tmp_path), tmp_path) as gw:
        assert await statuses(gw.url("/"), 2) == [200, 200]
        status, headers, body = await fetch(gw.url("/"))
    assert status == 429
    assert body == b"429 Too Many Requests: rate limit 'hourly' exceeded\n"
    assert headers["Retry-After"] == "3600"
    assert headers["RateLimit-Limit"] == "2"
    assert headers["RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Reset"] == "7200"
    assert headers["X-Request-Id"]


async def test_spoofed_forwarded_for_from_untrusted_peer_keeps_the_bucket(tmp_path: Path) -> None:
    async with in_process_gateway(limited_config(tmp_path), tmp_path) as gw:
        spoofs = [{"X-Forwarded-For": f"198.51.100.{i}"} for i in range(4)]
        codes = [(await fetch(gw.url("/"), headers=h))[0] for h in spoofs]
    assert codes == [200, 200, 429, 429]


async def test_trusted_proxy_gives_each_client_its_bucket(tmp_path: Path) -> None:
    config = limited_config(tmp_path)
    config["server"]["trusted_proxies"] = ["127.0.0.1/32"]
    async with in_process_gateway(config, tmp_path) as gw:
        first = {"X-Forwarded-For": "198.51.100.1"}
        second = {"X-Forwarded-For": "198.51.100.2"}
        assert await statuses(gw.url("/"), 3, headers=first) == [200, 200, 429]
        assert await statuses(gw.url("/"), 2, headers=second) == [200, 200]


async def test_header_key(tmp_path: Path) -> None:
    rule = {**HOURLY, "key": ["header:X-Api-Key"]}
    async with in_process_gateway(limited_config(tmp_path, rule), tmp_path) as gw:
        assert await statuses(gw.url("/"), 3, headers={"X-Api-Key": "a"}) == [200, 200, 429]
        assert await statuses(gw.url("/"), 1, headers={"X-Api-Key": "b"}) == [200]


async def test_dry_run_counts_but_lets_through(tmp_path: Path) -> None:
    rule = {**HOURLY, "dry_run": True}
    async with in_process_gateway(limited_config(tmp_path, rule), tmp_path) as gw:
        assert await statuses(gw.url("/"), 3) == [200, 200, 200]
        text = await metrics(gw)
    assert 'gateway_ratelimit_decisions_total{result="allowed",rule="hourly"} 2.0' in text
    assert 'gateway_ratelimit_decisions_total{result="dry_run_limited",rule="hourly"} 1.0' in text


async def test_exempt_cidr_is_never_limited(tmp_path: Path) -> None:
    rule = {**HOURLY, "exempt": ["127.0.0.0/8"]}
    async with in_process_gateway(limited_config(tmp_path, rule), tmp_path) as gw:
        assert await statuses(gw.url("/"), 4) == [200] * 4
        assert 'result="exempt",rule="hourly"} 4.0' in await metrics(gw)


async def test_flag_mode_answers_and_marks_the_access_log(tmp_path: Path) -> None:
    config = limited_config(tmp_path, rate_limit_mode="flag")
    async with in_process_gateway(config, tmp_path) as gw:
        assert await statuses(gw.url("/"), 3) == [200, 200, 200]
        entries = gw.access_log()
    assert ["rate_limited" in e for e in entries] == [False, False, True]
    assert entries[2]["rate_limited"] == "hourly"


async def test_metrics_report_decisions_and_active_keys(tmp_path: Path) -> None:
    async with in_process_gateway(limited_config(tmp_path), tmp_path) as gw:
        await statuses(gw.url("/"), 3)
        text = await metrics(gw)
    assert 'gateway_ratelimit_decisions_total{result="allowed",rule="hourly"} 2.0' in text
    assert 'gateway_ratelimit_decisions_total{result="limited",rule="hourly"} 1.0' in text
    assert 'gateway_ratelimit_active_keys{rule="hourly"} 1.0' in text


async def test_unlimited_route_and_builtins_are_not_charged(tmp_path: Path) -> None:
    config = limited_config(tmp_path)
    config["routes"].insert(0, {"name": "free", "match": {"path_prefix": "/free"}, "respond": {}})
    async with in_process_gateway(config, tmp_path) as gw:
        assert await statuses(gw.url("/free"), 5) == [200] * 5
        assert await statuses(gw.url("/_gateway/health"), 5) == [200] * 5
        assert await statuses(gw.url("/"), 3) == [200, 200, 429]


async def test_reload_keeps_buckets_of_unchanged_rules(tmp_path: Path) -> None:
    config = limited_config(tmp_path)
    async with in_process_gateway(config, tmp_path) as gw:
        assert await statuses(gw.url("/"), 3) == [200, 200, 429]
        config["routes"][0]["respond"]["body"] = "v2"
        gw.config_path.write_text(json.dumps(config))
        assert await gw.worker.reload() == []
        assert await statuses(gw.url("/"), 1) == [429]
        config["rate_limits"]["rules"][0]["burst"] = 3  # changed rule: new buckets
        gw.config_path.write_text(json.dumps(config))
        assert await gw.worker.reload() == []
        assert await statuses(gw.url("/"), 4) == [200, 200, 200, 429]


async def slow_route(gw: Any, handler: Any) -> None:
    from gateway.request.router import HostMatcher, Router, RouteRule
    from gateway.request.runtime import ActiveRoute

    runtime = gw.worker.holder.current
    rule = RouteRule(HostMatcher.of([]), "/", ActiveRoute("slow", 10, handler))
    gw.worker.holder.current = dataclasses.replace(runtime, router=Router([rule]))


async def test_concurrency_cap_answers_503_and_releases_on_every_path(tmp_path: Path) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        entered.set()
        if request.query.get("fail"):
            raise RuntimeError("boom")
        if request.query.get("fast"):
            return web.Response(text="fast")
        try:
            await gate.wait()
        except asyncio.CancelledError:
            # The slot is given back as this unwinds, before anything else runs.
            cancelled.set()
            raise
        return web.Response(text="done")

    config = base_config(tmp_path, limits={"max_concurrent_requests": 1})
    async with in_process_gateway(config, tmp_path) as gw:
        await slow_route(gw, handler)
        # A request in progress holds the only slot.
        first = asyncio.ensure_future(fetch(gw.url("/")))
        await entered.wait()
        status, headers, body = await fetch(gw.url("/"))
        assert (status, headers["Retry-After"]) == (503, "1")
        assert body == b"503 Service Unavailable: too many requests in progress\n"
        assert (await fetch(gw.url("/_gateway/health")))[0] == 200  # built-ins stay reachable
        gate.set()
        assert (await first)[0] == 200

        # Released after a handler error...
        assert (await fetch(gw.url("/?fail=1")))[0] == 500
        # ...and after the client gives up mid-request.
        gate.clear()
        entered.clear()
        abandoned = asyncio.ensure_future(fetch(gw.url("/")))
        await entered.wait()
        abandoned.cancel()
        await happens(cancelled, "the gateway cancels the abandoned request")
        assert (await fetch(gw.url("/?fast=1")))[:3:2] == (200, b"fast")
        assert "gateway_overload_rejected_total 1.0" in await metrics(gw)


async def test_config_rejects_unknown_rule_reference(tmp_path: Path) -> None:
    from gateway.config import ConfigError, parse_config

    config = limited_config(tmp_path)
    config["routes"][0]["rate_limits"] = ["hourly", "nope"]
    config["rate_limits"]["rules"].append({"name": "bad", "rate": 1, "key": ["cookie"]})
    with pytest.raises(ConfigError) as bad_key:
        parse_config(json.dumps(config).encode(), env={})
    assert [str(i) for i in bad_key.value.issues] == [
        "rate_limits.rules[1].key[0]: 'cookie' is not one of client_ip, route, write_key, "
        "header:<Name>"
    ]
    config["rate_limits"]["rules"].pop()
    with pytest.raises(ConfigError) as unknown:
        parse_config(json.dumps(config).encode(), env={})
    assert [str(i) for i in unknown.value.issues] == [
        "routes[0].rate_limits[1]: unknown rule 'nope' (known: hourly)"
    ]
