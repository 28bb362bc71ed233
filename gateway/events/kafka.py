"""The Kafka producer shell: records in, broker acknowledgement out.

Builds its own batches per partition (aiokafka's create_batch/send_batch): one
``send()`` per message tops out near 38k msg/s on one core, hand-built batches an order
of magnitude higher.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownTopicOrPartitionError

from gateway.config import Kafka
from gateway.events.kafka_security import MissingTopic, client_options
from gateway.events.spool import SpoolRecord

PARTITION_CACHE = 65536  # keys whose partition is remembered; cleared whole when full
CACHED_KEY = 128  # longest key remembered (ours are 36 bytes): at most 8 MiB of keys
_MASK = 0xFFFFFFFF
_M = 0x5BD1E995
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's ``Utils.murmur2``, unsigned), so that other
    producers put a key on the same partition. aiokafka's loops byte by byte in Python;
    unpacking the 32-bit words at once makes it 2.3 times cheaper."""
    length = len(data)
    count = length // 4
    words = _WORDS.get(count)
    if words is None:
        words = _WORDS[count] = struct.Struct(f"<{count}I")
    h = 0x9747B28C ^ length
    for k in words.unpack_from(data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        base = length & ~3
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


class KafkaWriter:
    """One aiokafka producer; ``send`` returns once every record is acknowledged."""

    def __init__(self, config: Kafka) -> None:
        self.config = config
        self._producer: Any = None
        self._partitions: dict[str, list[int]] = {}
        # Where this send's records without a visitor go; workers start apart.
        self._sticky = random.randrange(1 << 16)
        self._recent: dict[tuple[bytes, int], int] = {}

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect; raises (and leaves nothing open) when the broker is unreachable."""
        config = self.config
        producer = AIOKafkaProducer(
            **client_options(config),
            client_id=config.client_id,
            acks=config.acks,
            compression_type=None if config.compression == "none" else config.compression,
            linger_ms=config.linger_ms,
            max_batch_size=config.batch_bytes,
            enable_idempotence=config.idempotence,
            request_timeout_ms=int(config.ack_timeout * 1000),
        )
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        # A broker that comes back may have recreated topics: forget what we knew.
        self._partitions.clear()
        self._recent.clear()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def reset(self) -> None:
        """Drop the producer; the replayer connects a fresh one. A broker that came back
        may have lost its topics (or be a new one at the same address): fresh metadata
        is the only safe start, and a clean reconnect beats waiting on a stale one."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.ack_timeout):
                await self.stop()

    async def send(self, records: Sequence[SpoolRecord]) -> None:
        """Deliver ``records`` (any topics); returns when the broker acknowledged all."""
        producer = self._producer
        if producer is None:
            raise ConnectionError("Kafka producer is not connected")
        by_partition: dict[tuple[str, int], list[SpoolRecord]] = defaultdict(list)
        partitions: dict[str, list[int]] = {}
        # Records keyed by their event id only go together to one partition per send,
        # a different one each time (Kafka's sticky partitioner for keyless records).
        self._sticky += 1
        for record in records:
            topic = record.topic
            if topic not in partitions:
                partitions[topic] = await self._partitions_of(topic)
            choices = partitions[topic]
            if record.keyed:
                partition = self._partition(choices, record.key)
            else:
                partition = choices[self._sticky % len(choices)]
            by_partition[topic, partition].append(record)
        acks = []
        for (topic, partition), items in by_partition.items():
            batch = producer.create_batch()
            for record in items:
                key, value, headers = record.key, record.value, record.headers
                if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                    acks.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=headers)
            acks.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*acks)

    async def _partitions_of(self, topic: str) -> list[int]:
        partitions = self._partitions.get(topic)
        if partitions is None:
            try:
                # Within the send's deadline, so a missing topic is named as one.
                async with asyncio.timeout(self.config.ack_timeout * 0.8):
                    found = await self._producer.partitions_for(topic)
            except (TimeoutError, UnknownTopicOrPartitionError):
                raise MissingTopic(topic) from None
            partitions = self._partitions[topic] = sorted(found)
        return partitions

    def _partition(self, partitions: list[int], key: bytes) -> int:
        # The Java client's partitioner: murmur2, positive, modulo the partition count.
        # Visitors come back: remember.
        if len(key) > CACHED_KEY:  # a client's long id: not worth holding on to
            return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
        cache_key = (key, len(partitions))
        partition = self._recent.get(cache_key)
        if partition is None:
            if len(self._recent) >= PARTITION_CACHE:
                self._recent.clear()
            index = (murmur2(key) & 0x7FFFFFFF) % len(partitions)
            partition = self._recent[cache_key] = partitions[index]
        return partition
