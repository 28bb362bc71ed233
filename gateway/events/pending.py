"""What the pipeline holds for an event between submit and delivery, how a waiting
request learns the outcome, and the ways an event can be refused."""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from gateway.config import EVENT_TYPES
from gateway.events.envelope import Event, record_headers
from gateway.events.spool import FRAMING, HEADER_BYTES, SpoolRecord, encode_headers
from gateway.observability.metrics import Metrics


class Overloaded(Exception):
    """The queue is full (or the pipeline is closing): the event was not taken."""


class EventTooLarge(Overloaded):
    """An event Kafka would refuse forever (past the producer's batch size): not taken."""


class CannotKeep(Overloaded):
    """Kafka is not taking events and the spool has no room for these: not taken."""


class Mode(enum.Enum):
    DIRECT = "direct"
    SPOOLING = "spooling"


class _Waiting:
    """One durable submission: resolves when all of its events are safe, or on a failure."""

    __slots__ = ("done", "left")

    def __init__(self, done: asyncio.Future[None], count: int) -> None:
        self.done = done
        self.left = count

    def settle(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if exc is not None:
            self.done.set_exception(exc)
            return
        self.left -= 1
        if not self.left:
            self.done.set_result(None)


@dataclass(slots=True)
class _Pending:
    record: SpoolRecord
    event_type: str
    waiting: _Waiting | None
    stored: int  # bytes the record takes in the spool, framing included


# Spool bytes of a record beside its topic, key and value (headers within HEADER_BYTES).
OVERHEAD = FRAMING + HEADER_BYTES


def queued(event: Event, topic: str) -> _Pending:
    """The event as queued for ``topic``: its record (headers its own, as intake's, else
    by type and source) and the bytes that takes in the spool."""
    stored = OVERHEAD + len(topic) + len(event.key) + len(event.value)
    if event.headers is None:
        headers = record_headers(event.event_type, event.source)
    else:
        headers = event.headers
        # Measured unless the event knows (a traced event: HEADER_BYTES and its id).
        stored += event.headers_bytes or 2 + len(encode_headers(headers))
    record = SpoolRecord(topic, event.key, event.value, event.keyed, headers)
    return _Pending(record, event.event_type, None, stored)


def event_type_of(record: SpoolRecord) -> str:
    """The metrics label of a replayed record, read back from its envelope."""
    try:
        envelope = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return "unknown"
    event_type = envelope.get("event_type") if isinstance(envelope, dict) else None
    return event_type if isinstance(event_type, str) and event_type in EVENT_TYPES else "unknown"


def count_by_type(metrics: Metrics, events: Sequence[Event], outcome: str) -> None:
    """One metrics write per event type, not per event (batches come by the hundred)."""
    if len(events) == 1:
        metrics.observe_event(events[0].event_type, outcome)
        return
    for event_type, n in Counter(e.event_type for e in events).items():
        metrics.observe_event(event_type, outcome, n)
