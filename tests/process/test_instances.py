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
        {"name": "probe", "match": {"path_prefix": "/probe"}, "rate_limits": ["probe"],
         "respond": {"body": "ok"}},
        {"name": "collect", "collect": {}, "delivery": "durable"},
    )  # fmt: skip
    config["rate_limits"] = {
        "backend": {"kind": "redis", "url": redis.url, "timeout_ms": 200},
        "rules": [{"name": "shared", "rate": RATE, "burst": BURST, "shared": True},
                  # Its own buckets: probing Redis charges nothing of "shared".
                  {"name": "probe", "rate": 1000, "shared": True}],
    }  # fmt: skip
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


async def spray(
    gateways: list[GatewayProcess], seconds: float, path: str = "/api", *, fresh: bool = False
) -> dict[int, int]:
    """Requests to every instance in turn, 24 at a time, for ``seconds``: statuses counted.
    ``fresh``: a connection each, so that the kernel spreads them over every worker."""
    counts: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=0, force_close=fresh)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(n: int) -> None:
            url = gateways[n % len(gateways)].url(path)
            while time.monotonic() < deadline:
                async with session.get(url) as resp:
                    counts[resp.status] = counts.get(resp.status, 0) + 1
                    await resp.read()

        await asyncio.gather(*(client(n) for n in range(24)))
    return counts


async def allowed_per_worker(tmp_path: Path, path: str, answered: int) -> list[int]:
    """Requests for ``path`` each worker of the three instances let through, from their
    access logs (the request id's first ten characters name the process), once all
    ``answered`` requests are logged (a worker writes its log about once a second)."""
    logs = [tmp_path / f"instance{n}" / "access.log" for n in (1, 2, 3)]

    def entries() -> list[dict[str, Any]]:
        lines = [line for log in logs for line in log.read_text().splitlines()]
        return [e for e in map(json.loads, lines) if e["uri"] == path]

    async def all_logged() -> bool:
        return len(entries()) == answered

    await eventually(all_logged, f"{answered} requests for {path} logged")
    allowed: dict[str, int] = {}
    for entry in entries():
        worker = entry["request_id"][:10]
        allowed[worker] = allowed.get(worker, 0) + (entry["status"] == 200)
    return sorted(allowed.values())


async def each_worker_decides_on_redis(gateways: list[GatewayProcess], url: str) -> None:
    """Until every worker of every instance has made a decision on Redis since it came
    back (its first try may meet a connection the old Redis dropped, and fall back):
    on one connection, so one worker, a decision of the probe rule, then ``ready``, then
    a built-in 404 whose request id names the worker."""
    answering: set[str] = set()

    async def probe(gateway: GatewayProcess) -> None:
        connector = aiohttp.TCPConnector(limit=1)  # one connection, kept alive: one worker
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(gateway.url("/probe")) as resp:
                await resp.read()
            async with session.get(gateway.url("/_gateway/ready")) as resp:
                detail = (await resp.json())["checks"]["rate_limits"]["detail"]
            async with session.get(gateway.url("/_gateway/nothing")) as resp:
                worker = resp.headers["X-Request-Id"][:10]
        if detail == f"redis {url}: answering":
            answering.add(worker)

    async def all_answering() -> bool:
        await asyncio.gather(*(probe(gateway) for gateway in gateways))
        return len(answering) == 6

    await eventually(all_answering, "all six workers decide on Redis again", every=0.05)


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
        outage = await spray(gateways, 1.5, "/api/outage", fresh=True)
        assert set(outage) <= {200, 429}, outage
        allowed_by_worker = await allowed_per_worker(tmp_path, "/api/outage", sum(outage.values()))
        share = BURST / 2 + RATE / 2 * 1.5  # a worker's share of the rule, as without Redis
        assert len(allowed_by_worker) == 6, allowed_by_worker
        assert all(abs(n - share) <= 0.15 * share for n in allowed_by_worker), allowed_by_worker
        redis_server.start()  # empty: the shared bucket is full again
        await each_worker_decides_on_redis(gateways, redis_server.url)
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
