"""The one JSON envelope every event has on Kafka (schema: ``event.schema.json``).

Flat fields first (id, time, type, name), then identity, the client's payload, the
request facts, Segment timing, and which gateway made it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.jsonbytes import dumps_kept

if TYPE_CHECKING:
    from gateway.enrich.enricher import Added

_bits = random.getrandbits
SCHEMA_VERSION = 1
MAX_DEAD_LETTER_BODY = 64 * 1024


def uuid7() -> str:
    """RFC 9562 UUIDv7 in its text form: millisecond time first, so ids sort by time.
    Formatted here rather than through uuid.UUID, which costs more than the rest; the
    time part is formatted once per millisecond."""
    millis = _time_ns() // 1_000_000
    last_millis, prefix = _last_prefix[0]
    if millis != last_millis:
        stamp = f"{millis & 0xFFFFFFFFFFFF:012x}"
        prefix = f"{stamp[:8]}-{stamp[8:]}-7"  # "7": the version nibble
        _last_prefix[0] = (millis, prefix)
    # Python's Mersenne Twister, seeded from os.urandom in each worker process: these ids
    # identify, they do not authenticate, and a system call per id costs more than the id.
    rand = _bits(74)
    tail = f"{(rand & _RAND_B) | _VARIANT:016x}"  # variant 0b10, then rand_b
    return f"{prefix}{rand >> 62:03x}-{tail[:4]}-{tail[4:]}"


_time_ns = time.time_ns
_last_prefix: list[tuple[int, str]] = [(-1, "")]
_RAND_B = (1 << 62) - 1
_VARIANT = 0b10 << 62


def dead_letter(
    reason: str,
    *,
    code: str,
    path: str,
    ip: str | None,
    body: bytes,
    received_at: float,
    source: str,
) -> Event:
    """Input refused but kept for inspection, with why (the dead-letter topic). Like every
    event it has a time and a name: ``code``, the refusal's short name."""
    event_id = uuid7()
    received = iso_utc(received_at)
    value = {
        "event_id": event_id,
        "event_time": received,
        "event_type": "dead_letter",
        "event_name": code,
        "reason": reason,
        "received_at": received,
        "path": path,
        "ip": ip,
        "body": body[:MAX_DEAD_LETTER_BODY].decode(errors="replace"),
        "truncated": len(body) > MAX_DEAD_LETTER_BODY,
    }
    key = event_id.encode()
    return Event(event_id, "dead_letter", key, dumps_kept(value), keyed=False, source=source)


def iso_utc(timestamp: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, e.g. 2026-11-25T18:00:00.123Z, as
    ``datetime.isoformat`` writes it; ValueError outside the years 1 to 9999."""
    # Events of the same millisecond (a batch's, or a busy worker's) share the text:
    # remember the last one formatted. A Segment event formats two times (its corrected
    # timestamp, and the batch's receipt time), so the date and time of day are also
    # remembered per second: through datetime, each miss cost 2 µs.
    millis = int(timestamp * 1000)
    last_millis, last_text = _last_iso[0]
    if millis == last_millis:
        return last_text
    seconds, ms = divmod(millis, 1000)
    prefix = _seconds.get(seconds)
    if prefix is None:
        if not MIN_TIMESTAMP <= seconds < MAX_TIMESTAMP:
            raise ValueError(f"timestamp {timestamp} is outside the years 1 to 9999")
        t = time.gmtime(seconds)
        prefix = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
        )
        if len(_seconds) >= 4096:  # a few seconds' worth in practice; never unbounded
            _seconds.clear()
        _seconds[seconds] = prefix
    text = f"{prefix}{ms:03d}Z"
    _last_iso[0] = (millis, text)
    return text


_last_iso: list[tuple[int, str]] = [(-1, "")]
_seconds: dict[int, str] = {}
# Unix seconds of 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z: what datetime can show.
MIN_TIMESTAMP = -62135596800
MAX_TIMESTAMP = 253402300800


# Not frozen: a frozen dataclass's __init__ costs three times as much, and one (or
# several) of these is built per event. Nothing mutates them.
@dataclass(slots=True)
class RequestFacts:
    """What the gateway saw of the HTTP request that carried or caused the event."""

    ip: str | None
    method: str
    host: str
    path: str
    query: str
    user_agent: str
    referer: str
    trace_id: str | None = None  # W3C Trace Context, when server.trace_context is on
    # The request's fields, for enrichment (Client Hints, Sec-GPC, DNT); None without it.
    headers: Mapping[str, str] | None = None
    # The visitor's experiment assignments (name -> variant), when experiments are on.
    experiments: dict[str, str] | None = None


@dataclass(slots=True)
class SegmentFields:
    """What a Segment-style call adds to the envelope (all optional elsewhere)."""

    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    group_id: str | None = None
    previous_id: str | None = None
    sent_at: str | None = None
    timestamp: str | None = None  # corrected for client clock skew
    original_timestamp: str | None = None  # as the client sent it
    message_id: str | None = None
    integrations: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None  # every other top-level member, verbatim


_NO_SEGMENT = SegmentFields()


@dataclass(slots=True)
class Event:
    """One event ready for the sink: its topic, partitioning key and JSON bytes."""

    event_id: str
    event_type: str
    key: bytes
    value: bytes
    # False when the key is only the event id: no visitor's order to keep, so the
    # producer may put it on any partition.
    keyed: bool = True
    # What took it in (tracker, segment, pixel, redirect, request): a record header.
    source: str = ""
    # Set by ingestion that routes by the client's own type (intake): the topic, and the
    # record headers (the request's facts); else both follow from event_type and source.
    topic: str = ""
    headers: list[tuple[str, bytes]] | None = None
    # What ``headers`` take in the spool beyond HEADER_BYTES, when known (else measured).
    headers_bytes: int = 0
    # Why the sink does not send it ("bot", "consent": tracking.enrich), else "".
    withheld: str = ""


class GatewayInfo(msgspec.Struct):
    """Which gateway made an event: the envelope's ``gateway`` member."""

    node: str
    version: str
    schema: int


class Envelope(msgspec.Struct, omit_defaults=True):
    """The envelope as encoded (``event.schema.json``): members in the schema's order.
    msgspec encodes it straight to bytes of their own size (nothing to copy down, unlike
    orjson's buffer: see jsonbytes). The enrichment members after ``gateway`` are left
    out when their step is off, so consumers see no change unless it is configured."""

    event_id: str
    event_time: str
    event_type: str
    event_name: str
    anonymous_id: str | None
    user_id: str | None
    session_id: str | None
    properties: dict[str, Any]
    traits: dict[str, Any] | None
    context: dict[str, Any] | None
    group_id: str | None
    previous_id: str | None
    ip: str | None
    method: str
    host: str
    path: str
    query: str
    user_agent: str
    referer: str
    status: int | None
    duration_ms: float | None
    trace_id: str | None
    received_at: str
    sent_at: str | None
    timestamp: str
    original_timestamp: str | None
    message_id: str
    integrations: dict[str, Any] | None
    extra: dict[str, Any] | None
    gateway: GatewayInfo
    device: msgspec.Raw | None = None
    bot: msgspec.Raw | None = None
    geo: msgspec.Raw | None = None
    campaign: dict[str, Any] | None = None
    referrer: dict[str, Any] | None = None
    consent: dict[str, Any] | None = None
    violations: list[dict[str, Any]] | None = None
    experiments: dict[str, str] | None = None


_encode = msgspec.json.Encoder().encode
_GATEWAYS: dict[tuple[str, str], GatewayInfo] = {}


def _gateway(node: str, version: str) -> GatewayInfo:
    info = _GATEWAYS.get((node, version))
    if info is None:  # one per worker in practice
        info = _GATEWAYS[node, version] = GatewayInfo(node, version, SCHEMA_VERSION)
    return info


# A list, as aiokafka's batch builder takes no other sequence; shared, never mutated.
Headers = list[tuple[str, bytes]]
_HEADERS: dict[tuple[str, str], Headers] = {}


def record_headers(event_type: str, source: str) -> Headers:
    """The Kafka headers of an event's record, so consumers can route without parsing
    the JSON: one list per (type, source), shared by every record that has it."""
    headers = _HEADERS.get((event_type, source))
    if headers is None:
        headers = _HEADERS[event_type, source] = [
            ("event_type", event_type.encode()),
            ("schema", str(SCHEMA_VERSION).encode()),
            ("content-type", b"application/json"),
            ("source", source.encode()),
        ]
    return headers


def build_event(
    *,
    event_type: str,
    event_name: str,
    anonymous_id: str | None,
    session_id: str | None,
    request: RequestFacts,
    node: str,
    version: str,
    properties: dict[str, Any] | None = None,
    user_id: str | None = None,
    status: int | None = None,
    duration_ms: float | None = None,
    received_at: float | None = None,
    segment: SegmentFields | None = None,
    source: str = "",
    added: Added | None = None,
) -> Event:
    """Build the envelope; the record key is the visitor id (else the user id) so one
    visitor's events stay in order on one partition (the event id when there is neither).
    ``added``: what enrichment made of the event (its fields as they leave, and the new
    members)."""
    now = time.time() if received_at is None else received_at
    now_text = iso_utc(now)
    event_id = uuid7()
    seg = segment or _NO_SEGMENT
    if added is not None:
        return _enriched(event_type, event_name, session_id, request, node, version, status,
                         duration_ms, seg, source, added, event_id, now_text)  # fmt: skip
    # Positional, in the schema's order: a C-level constructor, encoded once (no dict).
    envelope = Envelope(
        event_id, now_text, event_type, event_name, anonymous_id, user_id, session_id,
        properties or {}, seg.traits, seg.context, seg.group_id, seg.previous_id,
        request.ip, request.method, request.host, request.path, request.query,
        request.user_agent, request.referer, status, duration_ms, request.trace_id,
        now_text, seg.sent_at, seg.timestamp or now_text, seg.original_timestamp,
        seg.message_id or event_id, seg.integrations, seg.extra, _gateway(node, version),
        experiments=request.experiments,
    )  # fmt: skip
    return _event(envelope, anonymous_id or user_id, event_id, event_type, source, request)


def _enriched(
    event_type: str,
    event_name: str,
    session_id: str | None,
    request: RequestFacts,
    node: str,
    version: str,
    status: int | None,
    duration_ms: float | None,
    seg: SegmentFields,
    source: str,
    added: Added,
    event_id: str,
    now_text: str,
) -> Event:
    m = added.members
    envelope = Envelope(
        event_id, now_text, event_type, event_name, m["anonymous_id"], m["user_id"],
        session_id, m["properties"] or {}, m["traits"], m["context"], m["group_id"],
        m["previous_id"], m["ip"], request.method, request.host, request.path, request.query,
        request.user_agent, request.referer, status, duration_ms, request.trace_id,
        now_text, seg.sent_at, seg.timestamp or now_text, seg.original_timestamp,
        seg.message_id or event_id, seg.integrations, m["extra"], _gateway(node, version),
        added.device, added.bot, added.geo, added.campaign, added.referrer, added.consent,
        added.violations, request.experiments,
    )  # fmt: skip
    event = _event(envelope, m["anonymous_id"] or m["user_id"], event_id, event_type, source,
                   request)  # fmt: skip
    event.withheld, event.topic = added.withheld, added.topic
    return event


def _event(
    envelope: Envelope,
    owner: str | None,
    event_id: str,
    event_type: str,
    source: str,
    request: RequestFacts,
) -> Event:
    key = (owner or event_id).encode()
    event = Event(
        event_id, event_type, key, _encode(envelope), keyed=owner is not None, source=source
    )
    if request.trace_id is not None:
        event.headers = traced_headers(event_type, source, request.trace_id)
        event.headers_bytes = TRACE_HEADER_BYTES
    return event


# In the spool, a traced record's headers take this much more than HEADER_BYTES allows.
TRACE_HEADER_BYTES = len("\ntrace_id=") + 32


def traced_headers(event_type: str, source: str, trace_id: str) -> Headers:
    """:func:`record_headers` and the request's trace id: the same list for every event
    of one request (a batch's hundred), kept while the next event has the same."""
    key = (event_type, source, trace_id)
    last_key, headers = _last_traced[0]
    if key != last_key:
        headers = [*record_headers(event_type, source), ("trace_id", trace_id.encode())]
        _last_traced[0] = (key, headers)
    return headers


_last_traced: list[tuple[tuple[str, str, str], Headers]] = [(("", "", ""), [])]
