"""The link store against Apache Kafka when things go wrong: a record it cannot read is
skipped, a links topic the broker will not create is named, and a follower that loses
the right to read says so in ``ready`` and catches up once it has it back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaProducer

from tests.apache_kafka import ApacheKafka
from tests.client import eventually
from tests.links.test_redirects import answers, api, call, links_config
from tests.support import in_process_gateway

KafkaFactory = Callable[..., ApacheKafka]
# The broker checks ACLs; the tests' own clients on PLAINTEXT (ANONYMOUS) may do anything,
# the gateway logs in as SCRAM user gw and may do what it is granted.
AUTHORIZING = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:ANONYMOUS",
}


async def ready_links(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body = await resp.json()
    return resp.status, body["checks"]["links"]


def as_gw(config: dict[str, Any], kafka: ApacheKafka) -> dict[str, Any]:
    config["kafka"]["bootstrap_servers"] = [kafka.address("sasl_plaintext")]
    config["kafka"] |= {
        "allow_plaintext_sasl": True,
        "sasl": {"mechanism": "SCRAM-SHA-256", "username": "gw",
                 "password": kafka.scram_users["gw"]},
    }  # fmt: skip
    return config


async def test_a_record_without_a_key_is_skipped_and_following_goes_on(
    tmp_path: Path, kafka_broker: ApacheKafka, caplog: pytest.LogCaptureFixture
) -> None:
    """A topic created by hand without compaction takes records without a key, which a
    compacted one refuses: such a record is logged and skipped, the next one applied."""
    config = links_config(tmp_path, kafka_broker.bootstrap)
    topic = config["redirects"]["topic"]
    await kafka_broker.create_topic(topic)  # cleanup.policy=delete: what an operator made
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=b'{"slug": "nokey"}')
    finally:
        await producer.stop()
    async with in_process_gateway(config, tmp_path) as gw:
        await call("POST", api(gw), {"slug": "after", "target": "https://a.example/after"})
        await answers(gw.url("/l/after"), 302, 5)
        status, links = await ready_links(gw.url("/_gateway/ready"))
    assert (status, links) == (200, {"ok": True, "detail": "1 links"})
    assert any("skipping a record with no key" in r.getMessage() for r in caplog.records)


async def test_a_links_topic_the_broker_will_not_create_is_named(
    tmp_path: Path, kafka_factory: KafkaFactory, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = kafka_factory(settings=AUTHORIZING)
    await asyncio.to_thread(kafka.start)
    config = as_gw(links_config(tmp_path, kafka.bootstrap), kafka)
    topic = config["redirects"]["topic"]
    async with in_process_gateway(config, tmp_path) as gw:
        status, links = await ready_links(gw.url("/_gateway/ready"))
    named = f"links topic {topic!r} cannot be created: Authorization failed."
    detail = f"[Error 29] TopicAuthorizationFailedError: {named}"
    assert (status, links) == (503, {"ok": False, "detail": detail})
    assert any(named in r.getMessage() for r in caplog.records)


async def test_a_follower_that_may_no_longer_read_shows_in_ready_then_recovers(
    tmp_path: Path, kafka_factory: KafkaFactory
) -> None:
    kafka = kafka_factory(settings=AUTHORIZING)
    await asyncio.to_thread(kafka.start)
    config = as_gw(links_config(tmp_path, kafka.bootstrap), kafka)
    topic = config["redirects"]["topic"]
    grant = ("--allow-principal", "User:gw", "--operation", "All", "--topic", topic)
    await asyncio.to_thread(kafka.acl, "--add", *grant)
    await asyncio.to_thread(kafka.acl, "--add", *grant[:4], "--topic", config["kafka"]["topic"])
    async with in_process_gateway(config, tmp_path) as gw:
        ready = gw.url("/_gateway/ready")
        assert await ready_links(ready) == (200, {"ok": True, "detail": "0 links"})
        await asyncio.to_thread(kafka.acl, "--remove", *grant)

        async def stale() -> bool:
            return (await ready_links(ready))[1]["detail"].startswith("links may be stale: ")

        await eventually(stale, "ready says the follower cannot read", 20)
        status, links = await ready_links(ready)
        await asyncio.to_thread(kafka.acl, "--add", *grant)

        async def recovered() -> bool:
            return await ready_links(ready) == (200, {"ok": True, "detail": "0 links"})

        await eventually(recovered, "the follower reads again", 30)
    assert status == 503
    assert "TopicAuthorizationFailedError" in links["detail"]
