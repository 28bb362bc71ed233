"""Shared rate limits on a real redis-server: one budget for every gateway, the same
answers as local limits, and Redis going away and coming back."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.client import fetch
from tests.conftest import RedisServer
from tests.limits.test_ratelimit_http import HOURLY, limited_config, metrics, statuses
from tests.support import InProcessGateway, in_process_gateway


def shared_config(tmp_path: Path, redis: RedisServer, **backend: Any) -> dict[str, Any]:
    config = limited_config(tmp_path, {**HOURLY, "shared": True})
    config["rate_limits"]["backend"] = {"kind": "redis", "url": redis.url, **backend}
    return config


@contextlib.asynccontextmanager
async def two_gateways(
    tmp_path: Path, redis: RedisServer, **backend: Any
) -> AsyncIterator[tuple[InProcessGateway, InProcessGateway]]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with (
        in_process_gateway(shared_config(tmp_path / "a", redis, **backend), tmp_path / "a") as a,
        in_process_gateway(shared_config(tmp_path / "b", redis, **backend), tmp_path / "b") as b,
    ):
        yield a, b


async def test_two_gateways_share_one_budget_with_the_same_headers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with two_gateways(tmp_path, redis_server) as (a, b):
        assert await statuses(a.url("/"), 1) == [200]
        assert await statuses(b.url("/"), 1) == [200]
        refused = [await fetch(gw.url("/")) for gw in (a, b)]
    for status, headers, body in refused:
        assert (status, body) == (429, b"429 Too Many Requests: rate limit 'hourly' exceeded\n")
        # As the local buckets answer (tests.limits.test_ratelimit_http): the same figures.
        assert (headers["Retry-After"], headers["RateLimit-Limit"]) == ("3600", "2")
        assert (headers["RateLimit-Remaining"], headers["RateLimit-Reset"]) == ("0", "7200")


async def test_redis_down_falls_back_to_the_local_share_then_shared_limits_resume(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = shared_config(tmp_path, redis_server)
    async with in_process_gateway(config, tmp_path) as gw:
        assert await statuses(gw.url("/"), 3) == [200, 200, 429]
        redis_server.stop()
        # Decided by this worker's own bucket (burst 2, fresh): answered, never a 5xx.
        assert await statuses(gw.url("/"), 3) == [200, 200, 429]
        ready = json.loads((await fetch(gw.url("/_gateway/ready")))[2])
        text = await metrics(gw)
        redis_server.start()  # a fresh Redis on the same port: an empty shared bucket
        assert await statuses(gw.url("/"), 3) == [200, 200, 429]
        after = json.loads((await fetch(gw.url("/_gateway/ready")))[2])
    assert ready["status"] == "ready"  # a detail, not a failure
    detail = ready["checks"]["rate_limits"]
    assert detail["ok"] is True and "failing for" in detail["detail"]
    assert "deciding by on_error=local" in detail["detail"]
    assert 'gateway_ratelimit_backend_errors_total{reason="error"} 3.0' in text
    assert after["checks"]["rate_limits"]["detail"].endswith(": answering")


async def test_on_error_allow_and_deny(tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.stop()
    for on_error, expected in (("allow", [200] * 4), ("deny", [429] * 2)):
        config = shared_config(tmp_path / on_error, redis_server, on_error=on_error)
        (tmp_path / on_error).mkdir()
        async with in_process_gateway(config, tmp_path / on_error) as gw:
            assert await statuses(gw.url("/"), len(expected)) == expected
