"""The cache shared by workers and instances (``gateway run`` process trees): a purge
asked of one worker reaches the others within a second, through the purge file without
Redis, through Redis's stream with it; instances share hits through the Redis tier; and
with Redis gone the memory tier goes on serving, the outage logged once."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.cache.origin import Origin, origin
from tests.cache.support import cache_config
from tests.client import eventually, fetch
from tests.conftest import RedisServer
from tests.support import GatewayProcess, start_process, stop_process

PAGE = {"Cache_Control": "max-age=600"}
HOST = {"Host": "shop.example"}  # instances behind one balancer see one host


async def bodies(gw: GatewayProcess, count: int = 20) -> set[bytes]:
    """What ``count`` fresh connections get: the kernel spreads them over the workers."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        seen = set()
        for _ in range(count):
            async with session.get(gw.url("/page"), headers=HOST) as resp:
                seen.add(await resp.read())
        return seen


def only(gw: GatewayProcess, body: bytes) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await bodies(gw) == {body}

    return check


async def purge(gw: GatewayProcess, **body: Any) -> int:
    status, _, raw = await fetch(gw.url("/_gateway/cache/purge", "admin"), "POST", json=body)
    assert status == 200, raw
    return int(json.loads(raw)["purged"])


def write(tmp_path: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    return path


def instance(tmp_path: Path, name: str, scripted: Origin, **cache: Any) -> dict[str, Any]:
    directory = tmp_path / name
    directory.mkdir()
    config = cache_config(directory, scripted.url)
    config["server"]["workers"] = 2
    config["cache"].update(cache)
    return config


async def test_a_purge_reaches_every_worker_within_a_second(tmp_path: Path) -> None:
    async with origin() as scripted:
        scripted.answer("/page", body=b"v1", **PAGE)
        config = instance(tmp_path, "a", scripted)
        gw = await start_process(write(tmp_path, "a", config), workers=2)
        try:
            assert await bodies(gw, 40) == {b"v1"}  # both workers hold it now
            scripted.answer("/page", body=b"v2", **PAGE)
            done = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "cache", "--config", str(tmp_path / "a.json"),
                "--url", f"http://127.0.0.1:{gw.ports['admin']}", "purge", "http://shop.example/page",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await done.communicate()
            assert (done.returncode, out) == (
                0, b"purged 1 entries in the worker asked; the others follow\n"
            ), err  # fmt: skip
            await eventually(only(gw, b"v2"), "every worker fetches the page again", 1.5)
        finally:
            await stop_process(gw)


async def test_instances_share_hits_and_purges_through_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with origin() as scripted:
        scripted.answer("/page", body=b"v1", **PAGE)
        redis = {"redis": {"url": redis_server.url}}
        a = await start_process(
            write(tmp_path, "a", instance(tmp_path, "a", scripted, **redis)), workers=2
        )
        b = await start_process(
            write(tmp_path, "b", instance(tmp_path, "b", scripted, **redis)), workers=2
        )
        try:
            assert (await fetch(a.url("/page"), headers=HOST))[2] == b"v1"

            async def shared() -> bool:
                headers = (await fetch(b.url("/page"), headers=HOST))[1]
                return headers["Cache-Status"].startswith("edge-gateway; hit")

            await eventually(shared, "the other instance finds it in redis", 2)
            assert await bodies(b, 40) == {b"v1"} and scripted.hits("/page") == 1
            scripted.answer("/page", body=b"v2", **PAGE)
            await purge(b, url="http://shop.example/page")
            await eventually(only(a, b"v2"), "the purge reaches the other instance", 1.5)
        finally:
            await stop_process(a)
            await stop_process(b)


async def test_with_redis_gone_the_memory_tier_serves_and_the_outage_is_logged_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with origin() as scripted:
        scripted.answer("/page", body=b"v1", **PAGE)
        config = instance(tmp_path, "a", scripted, redis={"url": redis_server.url})
        config["server"]["workers"] = 1
        gw = await start_process(write(tmp_path, "a", config), workers=1)
        try:
            assert (await fetch(gw.url("/page")))[2] == b"v1"
            redis_server.stop()
            scripted.answer("/other", body=b"o", **PAGE)
            answers = [await fetch(gw.url(path)) for path in ["/page", "/other"] * 5]
            ready = json.loads((await fetch(gw.url("/_gateway/ready")))[2])
            purged = await fetch(
                gw.url("/_gateway/cache/purge", "admin"), "POST", json={"tag": "x"}
            )
        finally:
            await stop_process(gw)
    assert {a[2] for a in answers} == {b"v1", b"o"} and {a[0] for a in answers} == {200}
    assert answers[-2][1]["Cache-Status"].startswith("edge-gateway; hit")
    assert scripted.hits("/page") == 1
    assert ready["checks"]["cache"]["ok"] is True
    assert ready["checks"]["cache"]["detail"].endswith(": failing: serving from memory")
    assert len(gw.matches(r"cache: redis .* failed")) == 1
    assert purged[0] == 503  # a purge that cannot reach every instance says so
    assert purged[2].startswith(b"503 Service Unavailable: the purge could not be announced: ")
