"""Helpers for event tests: a tracking config, and reading back what reached Kafka."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.support import base_config, with_routes

SCHEMA = json.loads(
    (Path(__file__).parent.parent / "gateway" / "events" / "event.schema.json").read_text()
)


def tracking_config(tmp_path: Path, bootstrap: str | None, **tracking: Any) -> dict[str, Any]:
    """Collect endpoints at /, a tracked hello route at /app, events to a fresh topic."""
    config = with_routes(
        base_config(tmp_path),
        {"name": "app", "match": {"path_prefix": "/app"}, "track": True, "respond": {"body": "hi"}},
        {"name": "collect", "collect": {}},
    )
    if bootstrap is not None:
        config["kafka"] = {
            "bootstrap_servers": [bootstrap],
            "topic": (topic := f"events-{uuid.uuid4().hex[:8]}"),
            "dead_letter_topic": f"{topic}-dead",
            "ack_timeout": 2,
        }
    config["tracking"] = {"node": "test-node", **tracking}
    return config


def seed_spool(directory: Path, topic: str, *values: bytes) -> Path:
    """A spool directory holding ``values`` as records, as a previous run left it."""
    from gateway.events.spool import Spool, SpoolRecord

    spool = Spool(directory, 1 << 20, 1 << 30)
    spool.open()
    spool.append([SpoolRecord(topic, b"k", value) for value in values])
    spool.close()
    (segment,) = directory.glob("*.seg")
    return segment


async def consume(
    bootstrap: str, topic: str, count: int, limit: float = 20.0, **security: Any
) -> list[Any]:
    """The first ``count`` records of ``topic`` (fails after ``limit`` seconds);
    ``security``: aiokafka's TLS/SASL options, for a secured broker."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **security,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(limit):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    records.extend(batch)
    except TimeoutError:
        raise AssertionError(f"only {len(records)} of {count} records arrived") from None
    finally:
        await consumer.stop()
    return records


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(record.value) for record in records]


async def consume_ids_until(
    bootstrap: str, topic: str, done: Callable[[set[str]], bool], limit: float = 20.0
) -> set[str]:
    """Event ids read from the start of ``topic`` until ``done(ids)`` holds."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    ids: set[str] = set()
    try:
        async with asyncio.timeout(limit):
            while not done(ids):
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    ids.update(json.loads(record.value)["event_id"] for record in batch)
    except TimeoutError:
        raise AssertionError(f"condition not met; {len(ids)} ids read") from None
    finally:
        await consumer.stop()
    return ids
