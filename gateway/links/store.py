"""Where short links live: every worker keeps them all in memory and follows the source.

With Kafka, the source is a compacted topic (key = slug, value = link JSON, a tombstone
deletes): each worker of each instance reads it from the beginning at start and follows
it, so a change made anywhere is served everywhere within about a second. Without Kafka,
an append-only JSON-lines file plays the same role for the workers of one host. Links
declared in config.json are served too and cannot be changed through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Mapping
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from gateway.config import Kafka
from gateway.links.model import Link
from gateway.observability.health import CheckResult

log = logging.getLogger("gateway.links")

FOLLOW_INTERVAL = 0.2
FOLLOW_BACKOFF_MAX = 10.0  # seconds between retries of a follower that cannot read


class LinkStore(Protocol):
    """The links, kept current in memory; writes go to the shared source."""

    @property
    def links(self) -> Mapping[str, Link]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, link: Link) -> None: ...

    async def delete(self, slug: str) -> None: ...

    def health(self) -> CheckResult: ...


def _apply(links: dict[str, Link], slug: str, value: bytes | None) -> None:
    if value is None:
        links.pop(slug, None)
        return
    try:
        links[slug] = Link.model_validate_json(value)
    except ValidationError as exc:
        log.warning("ignoring an invalid stored link %r: %s", slug, exc.errors()[0]["msg"])


class KafkaLinkStore:
    """Links as the state of a compacted Kafka topic."""

    def __init__(self, kafka: Kafka, topic: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self.links: dict[str, Link] = {}
        self._producer: Any = None
        self._consumer: Any = None
        self._follower: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()
        self._failing: str | None = None  # why links cannot be read, while they cannot

    async def start(self) -> None:
        # Imported here: a gateway without Kafka never loads aiokafka.
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

        from gateway.events.kafka_security import client_options

        # The event producer's TLS and SASL settings, for every client here too.
        options = client_options(self._kafka)
        await self._create_topic(options)
        self._producer = AIOKafkaProducer(**options, acks="all")
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)
        await self._consumer.start()
        partitions = await self._partitions()
        assigned = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_beginning(*assigned)
        self._follower = asyncio.ensure_future(self._follow())
        async with asyncio.timeout(30):
            await self._caught_up.wait()

    async def _create_topic(self, options: dict[str, Any]) -> None:
        """The compacted topic, created if missing; any other refusal (authorisation, a
        policy) is raised naming the topic, never guessed past."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError, for_code

        admin = AIOKafkaAdminClient(**options)
        await admin.start()
        try:
            topic = NewTopic(self._topic, 1, 1, topic_configs={"cleanup.policy": "compact"})
            response = await admin.create_topics([topic])
        finally:
            await admin.close()
        for name, code, *rest in response.topic_errors:
            error = for_code(code) if code else None
            if error is not None and error is not TopicAlreadyExistsError:
                detail = rest[0] if rest and rest[0] else error.__name__
                refused = error(f"links topic {name!r} cannot be created: {detail}")
                self._failing = str(refused)  # ready says why while the worker retries
                raise refused
        self._failing = None

    async def _partitions(self) -> set[int]:
        """The topic's partitions, as soon as the cluster's metadata knows them (a topic
        just created takes a moment to reach every broker); the producer waits for them."""
        try:
            async with asyncio.timeout(10):
                partitions: set[int] = await self._producer.partitions_for(self._topic)
        except TimeoutError:
            raise LookupError(f"links topic {self._topic!r} has no partitions") from None
        return partitions

    async def _follow(self) -> None:
        """Applies every record as it comes, for as long as the worker runs: a record it
        cannot read is logged and skipped, and a failing poll is logged once, shown in
        ``ready`` and retried with backoff (issue 28: a follower that died was silent)."""
        delay = FOLLOW_INTERVAL
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=int(FOLLOW_INTERVAL * 1000))
            except Exception as exc:
                if self._failing is None:
                    log.error("links: reading topic %r failed: %r; retrying", self._topic, exc)
                self._failing = f"links may be stale: reading {self._topic!r} failed: {exc!r}"
                await asyncio.sleep(delay)
                delay = min(delay * 2, FOLLOW_BACKOFF_MAX)
                continue
            if self._failing is not None:
                log.info("links: reading topic %r again", self._topic)
                self._failing, delay = None, FOLLOW_INTERVAL
            for records in batches.values():
                for record in records:
                    if record.key is None:
                        log.warning(
                            "links: skipping a record with no key at %s[%d]@%d",
                            record.topic, record.partition, record.offset,
                        )  # fmt: skip
                        continue
                    _apply(self.links, record.key.decode(errors="replace"), record.value)
            if not batches:
                self._caught_up.set()  # an empty poll: everything there was has been read

    async def put(self, link: Link) -> None:
        value = orjson.dumps(link.to_json())
        await self._producer.send_and_wait(self._topic, value=value, key=link.slug.encode())
        self.links[link.slug] = link  # served here at once; the topic brings it back too

    async def delete(self, slug: str) -> None:
        await self._producer.send_and_wait(self._topic, value=None, key=slug.encode())
        self.links.pop(slug, None)

    def health(self) -> CheckResult:
        if self._failing is not None:
            return CheckResult(False, self._failing)
        if self._follower is not None and self._follower.done():
            return CheckResult(False, "links are no longer followed")
        ok = self._caught_up.is_set()
        return CheckResult(ok, f"{len(self.links)} links" if ok else "loading links")

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()


class FileLinkStore:
    """Links as an append-only JSON-lines file that every worker of the host follows."""

    def __init__(self, path: str) -> None:
        self._path = path
        self.links: dict[str, Link] = {}
        self._offset = 0
        self._partial = b""
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._catch_up()
        self._follower = asyncio.ensure_future(self._follow())

    async def _catch_up(self) -> None:
        # Read off the loop, apply on it: request handlers read self.links unlocked.
        data = await asyncio.get_running_loop().run_in_executor(None, self._read_new)
        self._apply_lines(data)

    def _read_new(self) -> bytes:
        try:
            with open(self._path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return b""
        self._offset += len(data)
        return data

    def _apply_lines(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # a line still being written waits for its end
        for line in lines:
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
                slug = entry["slug"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("ignoring a malformed line in %s", self._path)
                continue
            _apply(self.links, slug, None if entry.get("deleted") else line)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL)
            await self._catch_up()

    def _append(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry) + b"\n"
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # one whole line at a time, across workers
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def put(self, link: Link) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._append, link.to_json())
        self.links[link.slug] = link

    async def delete(self, slug: str) -> None:
        entry = {"slug": slug, "deleted": True}
        await asyncio.get_running_loop().run_in_executor(None, self._append, entry)
        self.links.pop(slug, None)

    def health(self) -> CheckResult:
        return CheckResult(True, f"{len(self.links)} links")

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
