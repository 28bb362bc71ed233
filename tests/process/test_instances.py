"""Several instances as one: three ``gateway run`` processes of two workers each, one
Kafka-protocol broker, one redis-server. Shared limits hold for the sum of them (and
fall back when Redis goes), links made on one serve on all, and one visitor's events keep
their order whichever instance took them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.apache_kafka import ApacheKafka
from tests.client import eventually
from tests.conftest import RedisServer
from tests.events_support import consume
from tests.links.test_redirects import AUTH, TOKEN, answers, call
from tests.support import GatewayProcess, base_config, start_process, stop_process, with_routes

RATE, BURST = 50, 10  # the shared rule: 50 requests a second, 10 at once


def instance_config(
    tmp_path: Path, redis: RedisServer, bootstrap: str, topic: str
) -> dict[str, Any]:
    config = with_routes(
        base_config(tmp_path, workers=2),
        {"name": "api", "match": {"path_prefix": "/api"}, "rate_limits": ["shared"],
         "respond": {"body": "ok"}},
        {"name": "links", "match": {"path_prefix": "/l"}, "redirect": {}},
        {"name": "collect", "collect": {}, "delivery": "durable"},
    )  # fmt: skip
    config["rate_limits"] = {
        "backend": {"kind": "redis", "url": redis.url, "timeout_ms": 200},
        "rules": [{"name": "shared", "rate": RATE, "burst": BURST, "shared": True}],
    }
    config["kafka"] = {"bootstrap_servers": [bootstrap], "topic": topic,
                       "topics": {"track": f"{topic}-track"},  # the visitor's, apart
                       "dead_letter_topic": f"{topic}-dead", "ack_timeout": 5}  # fmt: skip
    config["redirects"] = {"admin_token": TOKEN, "topic": f"{topic}-links",
                           "file": str(tmp_path / "links.jsonl")}  # fmt: skip
    config["tracking"] = {"node": tmp_path.name}
    return config


@contextlib.asynccontextmanager
async def instances(
    tmp_path: Path, redis: RedisServer, bootstrap: str, topic: str
) -> AsyncIterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    try:
        for n in range(3):
            home = tmp_path / f"instance{n + 1}"
            home.mkdir()
            path = home / "gateway.json"
            path.write_text(json.dumps(instance_config(home, redis, bootstrap, topic)))
            started.append(await start_process(path, workers=2))
        yield started
    finally:
        for gateway in started:
            await stop_process(gateway)


async def spray(gateways: list[GatewayProcess], seconds: float) -> dict[int, int]:
    """Requests to every instance in turn, 24 at a time, for ``seconds``: statuses counted."""
    counts: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(n: int) -> None:
            url = gateways[n % len(gateways)].url("/api")
            while time.monotonic() < deadline:
                async with session.get(url) as resp:
                    counts[resp.status] = counts.get(resp.status, 0) + 1
                    await resp.read()

        await asyncio.gather(*(client(n) for n in range(24)))
    return counts


async def test_three_instances_share_limits_links_and_visitor_order(
    tmp_path: Path, redis_server: RedisServer, kafka_broker: ApacheKafka
) -> None:
    topic = f"events-{uuid.uuid4().hex[:8]}"
    async with instances(tmp_path, redis_server, kafka_broker.bootstrap, topic) as gateways:
        # 1. A shared rule holds for the sum of six workers on three instances.
        seconds = 4.0
        counts = await spray(gateways, seconds)
        allowed = counts.get(200, 0) - BURST
        assert set(counts) <= {200, 429} and counts.get(429, 0) > allowed, counts
        assert abs(allowed - RATE * seconds) <= 0.1 * RATE * seconds, counts  # today: 6x

        # 2. Redis killed: every request still answered, by each worker's own share.
        redis_server.stop()
        outage = await spray(gateways, 1.5)
        assert set(outage) <= {200, 429} and outage.get(200, 0) > 0, outage
        redis_server.start()
        await asyncio.sleep(1.2)  # the shared bucket of the fresh Redis is empty
        back = await spray(gateways, 3.0)
        assert abs(back.get(200, 0) - BURST - RATE * 3) <= 0.1 * RATE * 3, back

        # 3. A link made on instance 1 answers on 2 and 3 within a second; deleted, gone.
        first, *others = gateways
        api = first.url("/_gateway/links", listener="admin")
        link = {"slug": "sale", "target": "https://shop.example/sale"}
        assert (await call("POST", api, link, AUTH))[0] == 201
        for gateway in others:
            await answers(gateway.url("/l/sale"), 302, limit=1.0)
        # The DELETE may reach instance 1's other worker before it has read the link
        # back from Kafka: that one answers 404 for a link it does not know yet.

        async def deleted() -> bool:
            return (await call("DELETE", f"{api}/sale", None, AUTH))[0] == 204

        await eventually(deleted, "the link is deleted", 1.0, every=0.05)
        for gateway in gateways:
            await answers(gateway.url("/l/sale"), 404, limit=1.0)

        # 4. One visitor's events, each to another instance: one partition, in order.
        cookie = {"Cookie": "vid=visitor-1; sid=session-1"}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            for seq in range(9):
                url = gateways[seq % 3].url(f"/tr/v1/ename/step/seq/{seq}")
                async with session.post(url, json={}, headers=cookie) as resp:
                    assert resp.status == 204  # durable: in Kafka before the answer
    records = await consume(kafka_broker.bootstrap, f"{topic}-track", 9)
    assert {r.partition for r in records} == {records[0].partition}
    events = [json.loads(r.value) for r in records]
    assert [e["properties"]["seq"] for e in events] == [str(n) for n in range(9)]
    assert [e["gateway"]["node"] for e in events] == ["instance1", "instance2", "instance3"] * 3
    assert {e["anonymous_id"] for e in events} == {"visitor-1"}
