"""The test broker fixture is a real Kafka-protocol broker: records go in and come back."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.apache_kafka import ApacheKafka


async def test_broker_round_trips_a_record(kafka_broker: ApacheKafka) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"value", key=b"key")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value, record.topic) == (b"key", b"value", topic)
