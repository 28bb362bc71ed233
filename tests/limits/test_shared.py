"""Shared rate limits on a real redis-server when Redis cannot answer: on_error allow and
deny (sharing, the local fallback and recovery: tests/process/test_instances.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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
