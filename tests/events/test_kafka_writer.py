"""The Kafka writer's partitioning against a real broker: visitors by the Java client's
murmur2, records without a visitor together on one partition per send."""

from __future__ import annotations

import os
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2 as reference_murmur2

from gateway.config import Kafka
from gateway.events.kafka import KafkaWriter, murmur2
from gateway.events.spool import SpoolRecord
from tests.apache_kafka import ApacheKafka
from tests.conftest import Broker

PARTITIONS = 3


def test_murmur2_matches_the_java_clients() -> None:
    # aiokafka's is a line-by-line port of org.apache.kafka.common.utils.Utils.murmur2.
    for length in range(0, 70):
        for _ in range(20):
            data = os.urandom(length)
            assert murmur2(data) == reference_murmur2(data), data


async def _topic(broker: Broker) -> str:
    name = f"partitioned-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()
    return name


async def _partitions_by_key(broker: Broker, topic: str, count: int) -> dict[bytes, set[int]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: dict[bytes, set[int]] = {}
    try:
        seen = 0
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    assert record.key is not None
                    found.setdefault(record.key, set()).add(record.partition)
                    seen += 1
    finally:
        await consumer.stop()
    return found


async def test_visitors_go_where_the_java_client_puts_them(kafka_broker: ApacheKafka) -> None:
    topic = await _topic(kafka_broker)
    writer = KafkaWriter(Kafka(bootstrap_servers=(kafka_broker.bootstrap,), topic=topic))
    await writer.start()
    keys = [f"visitor-{i}".encode() for i in range(30)]
    try:
        await writer.send([SpoolRecord(topic, key, b"{}") for key in keys])
        await writer.send([SpoolRecord(topic, key, b"{}") for key in keys])  # from the cache
    finally:
        await writer.stop()
    found = await _partitions_by_key(kafka_broker, topic, 2 * len(keys))
    for key in keys:
        assert found[key] == {(reference_murmur2(key) & 0x7FFFFFFF) % PARTITIONS}
    assert len({p for parts in found.values() for p in parts}) == PARTITIONS


async def test_records_without_a_visitor_share_one_partition_per_send(
    kafka_broker: ApacheKafka,
) -> None:
    topic = await _topic(kafka_broker)
    writer = KafkaWriter(Kafka(bootstrap_servers=(kafka_broker.bootstrap,), topic=topic))
    await writer.start()
    sends = [[f"event-{s}-{i}".encode() for i in range(10)] for s in range(PARTITIONS)]
    try:
        for keys in sends:
            await writer.send([SpoolRecord(topic, key, b"{}", keyed=False) for key in keys])
    finally:
        await writer.stop()
    found = await _partitions_by_key(kafka_broker, topic, sum(map(len, sends)))
    used = []
    for keys in sends:
        (partition,) = {p for key in keys for p in found[key]}
        used.append(partition)
    assert sorted(used) == list(range(PARTITIONS))  # each send on the next partition
