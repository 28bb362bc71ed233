"""Shared rate limits on a real redis-server when Redis cannot answer: on_error allow and
deny (sharing, the local fallback and recovery: tests/process/test_instances.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from gateway.config import RedisBackend
from gateway.limits.shared import SharedBackend
from tests.conftest import RedisServer
from tests.limits.test_ratelimit_http import HOURLY, limited_config, statuses
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


async def test_on_error_allow_and_deny(tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.stop()
    for on_error, expected in (("allow", [200] * 4), ("deny", [429] * 2)):
        config = shared_config(tmp_path / on_error, redis_server, on_error=on_error)
        (tmp_path / on_error).mkdir()
        async with in_process_gateway(config, tmp_path / on_error) as gw:
            assert await statuses(gw.url("/"), len(expected)) == expected


async def test_one_ticks_decisions_are_each_charged_and_survive_a_script_flush(
    redis_server: RedisServer,
) -> None:
    """30 decisions asked in one tick (one pipeline) on a bucket of 10: exactly 10 fit, in
    order; after Redis forgets its scripts (as on a restart), the next batch loads it."""
    errors: list[str] = []
    backend = SharedBackend(RedisBackend(kind="redis", url=redis_server.url), errors.append)
    client = redis.Redis.from_url(redis_server.url)
    try:
        answers = await asyncio.gather(*(backend.decide("k", 10, 0.001) for _ in range(30)))
        assert [allowed for allowed, _ in answers] == [True] * 10 + [False] * 20
        assert answers[-1][1] == pytest.approx(10, abs=0.01)
        await client.script_flush()
        assert await backend.decide("other", 10, 1.0) == (True, 1.0)
        assert await client.exists("gw:k", "gw:other") == 2
    finally:
        await client.aclose()
        await backend.close()
    assert errors == []
