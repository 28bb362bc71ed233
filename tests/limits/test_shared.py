"""Shared rate limits on a real redis-server when Redis cannot answer: on_error allow and
deny (sharing, the local fallback and recovery: tests/process/test_instances.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis.asyncio as redis

from gateway.config import RedisBackend
from gateway.limits.shared import SharedBackend
from tests.client import fetch
from tests.conftest import RedisServer
from tests.limits.test_ratelimit_http import HOURLY, limited_config, metrics, statuses
from tests.support import InProcessGateway, in_process_gateway


def shared_config(tmp_path: Path, redis: RedisServer, **backend: Any) -> dict[str, Any]:
    config = limited_config(tmp_path, {**HOURLY, "shared": True})
    config["rate_limits"]["backend"] = {"kind": "redis", "url": redis.url, **backend}
    return config


async def test_on_error_allow_and_deny(tmp_path: Path, redis_server: RedisServer) -> None:
    redis_server.stop()
    for on_error, expected in (("allow", [200] * 4), ("deny", [429] * 2)):
        config = shared_config(tmp_path / on_error, redis_server, on_error=on_error)
        (tmp_path / on_error).mkdir()
        async with in_process_gateway(config, tmp_path / on_error) as gw:
            assert await statuses(gw.url("/"), len(expected)) == expected


async def test_a_redis_outage_is_logged_once_counted_and_shown_in_ready(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.limits.shared")
    config = shared_config(tmp_path, redis_server, timeout_ms=1000)  # slow is not down here
    url = redis_server.url
    async with in_process_gateway(config, tmp_path) as gw:
        assert await statuses(gw.url("/"), 1) == [200]  # decided on Redis
        redis_server.stop()
        # Decided by on_error=local: this worker's own bucket of 2.
        assert await statuses(gw.url("/"), 3) == [200, 200, 429]
        down = await ready_check(gw)
        errors = metric(await metrics(gw), 'gateway_ratelimit_backend_errors_total{reason="error"}')
        redis_server.start()  # empty: a fresh bucket
        assert await statuses(gw.url("/"), 1) == [200]
        up = await ready_check(gw)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # as the outage begins, and as it ends
    failed, resumed = messages
    assert failed.startswith(f"rate-limit backend {url} failed (error: ")
    assert failed.endswith("); deciding by on_error=local until it answers")
    assert resumed.startswith(f"rate-limit backend {url} answers again after ")
    assert resumed.endswith(" s; shared limits resume")
    assert errors == 3
    assert down["ok"] is True  # readiness holds: limits still apply
    assert down["detail"].startswith(f"redis {url}: failing for ")  # then whole seconds
    assert down["detail"].endswith(
        " s (error: network:ConnectionError); deciding by on_error=local"
    )
    assert up == {"ok": True, "detail": f"redis {url}: answering"}


async def ready_check(gw: InProcessGateway) -> dict[str, Any]:
    status, _, body = await fetch(gw.url("/_gateway/ready"))
    assert status == 200
    check: dict[str, Any] = orjson.loads(body)["checks"]["rate_limits"]
    return check


def metric(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " "))  # fmt: skip


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
