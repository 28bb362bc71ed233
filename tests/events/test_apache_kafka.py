"""The delivery promises that need a broker which keeps what it acknowledged, proven
against Apache Kafka: a retried batch written once by the idempotent producer, nothing
answered lost when the broker is SIGKILLed under load and restarted from its log, a
broker down longer than the spool can hold (503, then the replay), and fast-mode events
acknowledged while the broker is frozen (issue 27, D9)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.apache_kafka import ApacheKafka
from tests.client import eventually, fetch
from tests.events_support import consume, consume_ids_until, tracking_config, values
from tests.kafka_proxy import CuttingProxy
from tests.ports import free_port
from tests.support import InProcessGateway, in_process_gateway

KafkaFactory = Callable[..., ApacheKafka]


async def ready_detail(gw: InProcessGateway) -> str:
    body = (await fetch(gw.url("/_gateway/ready")))[2]
    return str(json.loads(body)["checks"]["events"]["detail"])


async def until_direct(gw: InProcessGateway, limit: float = 40.0) -> None:
    async def direct() -> bool:
        return await ready_detail(gw) == "kafka"

    await eventually(direct, "the spool replayed and events sent to Kafka directly", limit)


class Load:
    """Tracker POSTs from ``clients`` concurrent clients until stopped: the event ids
    answered 200 and the statuses of the others."""

    def __init__(self, gw: InProcessGateway, clients: int = 20) -> None:
        self.answered: list[str] = []
        self.refused: collections.Counter[int] = collections.Counter()
        self._url = gw.url("/str/v1/tag/load")
        self._clients = clients
        self._stop = asyncio.Event()
        self._task: asyncio.Future[Any] | None = None
        self._progress = asyncio.Event()

    async def __aenter__(self) -> Load:
        self._task = asyncio.gather(*(self._client(i) for i in range(self._clients)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def until(self, answered: int = 0, refused: int = 0, limit: float = 30.0) -> None:
        """Until at least ``answered`` more answers and ``refused`` more refusals came."""
        goal = (len(self.answered) + answered, self.refused.total() + refused)
        async with asyncio.timeout(limit):
            while len(self.answered) < goal[0] or self.refused.total() < goal[1]:
                self._progress.clear()
                await self._progress.wait()

    async def _client(self, i: int) -> None:
        async with aiohttp.ClientSession() as session:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    async with session.post(self._url, json={"c": i, "n": n}) as resp:
                        if resp.status == 200:
                            self.answered.append((await resp.json())["event_id"])
                        else:
                            self.refused[resp.status] += 1
                            await asyncio.sleep(0.05)  # as Retry-After asks, briefly
                except aiohttp.ClientError:
                    self.refused[0] += 1
                self._progress.set()


@pytest.mark.parametrize("idempotence", [True, False])
async def test_a_batch_whose_answer_was_lost_is_written_once_when_idempotent(
    tmp_path: Path, kafka_factory: KafkaFactory, idempotence: bool
) -> None:
    """The broker writes a batch, the connection drops before its answer arrives, aiokafka
    sends the batch again: with ``kafka.idempotence`` the broker recognises the retry
    (producer id and sequence) and writes it once; without, twice."""
    relay_port = free_port()
    kafka = kafka_factory(advertised={"plaintext": relay_port})
    proxy = await CuttingProxy(relay_port, kafka.ports["plaintext"]).start()
    try:
        await asyncio.to_thread(kafka.start)
        config = tracking_config(tmp_path, f"127.0.0.1:{relay_port}")
        config["kafka"] |= {"idempotence": idempotence, "ack_timeout": 10}
        topic = config["kafka"]["topic"]
        async with in_process_gateway(config, tmp_path) as gw:
            warm = await fetch(gw.url("/str/v1/step/warm"), "POST", json={})
            assert warm[0] == 200, warm
            proxy.cut(1)
            status, _, body = await fetch(gw.url("/str/v1/step/cut"), "POST", json={})
            assert status == 200, body
        cut_id = json.loads(body)["event_id"]
        records = values(await consume(kafka.bootstrap, topic, 2 if idempotence else 3))
    finally:
        await proxy.stop()
    assert (proxy.cuts, proxy.produced) == (1, 3)  # the warm-up, the cut batch, its retry
    copies = [event["event_id"] for event in records].count(cut_id)
    assert copies == (1 if idempotence else 2)


async def test_nothing_answered_is_lost_when_the_broker_is_sigkilled_under_load(
    tmp_path: Path, kafka_factory: KafkaFactory
) -> None:
    kafka = kafka_factory()
    await asyncio.to_thread(kafka.start)
    config = tracking_config(tmp_path, kafka.bootstrap)
    config["kafka"]["ack_timeout"] = 1
    async with in_process_gateway(config, tmp_path) as gw:
        async with Load(gw) as load:
            await load.until(answered=100)
            kafka.kill()  # mid-load, with acknowledged batches only in its page cache
            await load.until(answered=100)  # answered from the spool meanwhile
        await asyncio.to_thread(kafka.start)  # from its own log
        await until_direct(gw)
        async with Load(gw) as after:
            await after.until(answered=50)
        answered = set(load.answered) | set(after.answered)
        assert not load.refused and not after.refused, (load.refused, after.refused)
        seen = await consume_ids_until(
            kafka.bootstrap, config["kafka"]["topic"], lambda ids: answered <= ids, limit=60
        )
    assert answered <= seen


async def test_a_broker_down_longer_than_the_spool_holds_gets_503_then_replays(
    tmp_path: Path, kafka_factory: KafkaFactory
) -> None:
    kafka = kafka_factory()
    await asyncio.to_thread(kafka.start)
    config = tracking_config(tmp_path, kafka.bootstrap)
    config["kafka"]["ack_timeout"] = 1
    config["spool"]["max_bytes"] = 32 << 10
    config["spool"]["segment_bytes"] = 8 << 10
    async with in_process_gateway(config, tmp_path) as gw:
        kafka.stop()
        async with Load(gw, clients=5) as load:
            await load.until(refused=20)  # the spool filled up
        full = await fetch(gw.url("/str/v1/step/full"), "POST", json={})
        ready = json.loads((await fetch(gw.url("/_gateway/ready")))[2])
        await asyncio.to_thread(kafka.start)
        await until_direct(gw)
        after = await fetch(gw.url("/str/v1/step/after"), "POST", json={})
    answered = set(load.answered)
    assert answered and set(load.refused) == {503}
    assert (full[0], full[1]["Retry-After"]) == (503, "1")
    assert full[2].endswith(b"events cannot be stored right now\n")
    assert ready["checks"]["events"] == {"ok": False, "detail": "spool full: events cannot be kept"}
    assert after[0] == 200
    wanted = answered | {json.loads(after[2])["event_id"]}
    seen = await consume_ids_until(
        kafka.bootstrap, config["kafka"]["topic"], lambda ids: wanted <= ids, limit=60
    )
    assert wanted <= seen


async def test_fast_events_answered_while_the_broker_is_frozen_are_all_kept(
    tmp_path: Path, kafka_factory: KafkaFactory
) -> None:
    """Issue 27, D9: a spool smaller than the event queue. Fast mode answers once an
    event is queued; when Kafka stops answering, the queue goes to the spool: what the
    spool could not take was dropped although acknowledged. Now an event is taken only
    while the spool could hold it with everything queued: the rest get 503."""
    kafka = kafka_factory()
    await asyncio.to_thread(kafka.start)
    config = tracking_config(tmp_path, kafka.bootstrap, delivery="fast", queue_bytes=4 << 20)
    config["kafka"]["ack_timeout"] = 1
    config["spool"]["max_bytes"] = 64 << 10
    assert kafka.process is not None
    pid = kafka.process.pid
    async with in_process_gateway(config, tmp_path) as gw:
        try:
            async with Load(gw) as load:
                await load.until(answered=200)
                os.kill(pid, signal.SIGSTOP)  # frozen mid-flood: nothing acknowledged

                async def spooling() -> bool:
                    return (await ready_detail(gw)).startswith("spool")

                await eventually(spooling, "batches past ack_timeout go to the spool")
                await load.until(refused=50)
        finally:
            os.kill(pid, signal.SIGCONT)
        await until_direct(gw)
        gw.worker.metrics.flush()
        metrics = (await fetch(gw.url("/_gateway/metrics", listener="admin")))[2].decode()
        answered = set(load.answered)
        seen = await consume_ids_until(
            kafka.bootstrap, config["kafka"]["topic"], lambda ids: answered <= ids, limit=60
        )
    assert answered <= seen
    assert set(load.refused) == {503}
    assert 'outcome="dropped"' not in metrics


async def test_a_topic_the_broker_will_not_create_is_named(
    tmp_path: Path, kafka_factory: KafkaFactory
) -> None:
    kafka = kafka_factory(settings={"auto.create.topics.enable": "false"})
    await asyncio.to_thread(kafka.start)
    config = tracking_config(tmp_path, kafka.bootstrap)
    topic = config["kafka"]["topic"]
    async with in_process_gateway(config, tmp_path) as gw:
        status, _, body = await fetch(gw.url("/str/v1/step/one"), "POST", json={})
        detail = json.loads((await fetch(gw.url("/_gateway/ready")))[2])["checks"]["events"]
        assert status == 200, body  # kept in the spool
        await kafka.create_topic(topic)  # the operator creates it: the spool is replayed
        await until_direct(gw)
    assert detail == {
        "ok": False,
        "detail": f"topic {topic!r} does not exist and the broker did not create it; "
        "events are spooled",
    }
    (record,) = await consume(kafka.bootstrap, topic, 1)
    assert json.loads(record.value)["event_id"] == json.loads(body)["event_id"]
