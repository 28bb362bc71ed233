"""Event ids and times: formatted by hand for speed, so checked against the standard."""

from __future__ import annotations

import random
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from gateway.events.envelope import (
    MAX_TIMESTAMP,
    MIN_TIMESTAMP,
    RequestFacts,
    SegmentFields,
    build_event,
    iso_utc,
    uuid7,
)


def test_uuid7_is_an_rfc_9562_version_7_id_with_the_current_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid7() for _ in range(5000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lowercase, 8-4-4-4-12
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert before <= parsed.int >> 80 <= after


def test_uuid7_sorts_by_time_across_milliseconds() -> None:
    first = uuid7()
    time.sleep(0.002)
    assert first < uuid7()


def test_iso_utc_matches_datetime_to_the_millisecond() -> None:
    for stamp in (0.0, 9.5, 1764093600.1234, 1764093600.9999, 1764093601.0005):
        expected = datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")
        assert iso_utc(stamp) == expected.replace("+00:00", "Z")
        assert iso_utc(stamp) == iso_utc(stamp)  # the remembered one


def test_iso_utc_matches_datetime_from_year_1_to_9999_and_refuses_beyond() -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    rng = random.Random(2026)
    stamps = [rng.uniform(MIN_TIMESTAMP, MAX_TIMESTAMP - 1) for _ in range(20_000)]
    stamps += [MIN_TIMESTAMP, MAX_TIMESTAMP - 0.001, -0.001, -1.5, 951782400.0]  # 2000-02-29
    for stamp in stamps:
        exact = epoch + timedelta(milliseconds=int(stamp * 1000))
        expected = exact.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        assert iso_utc(stamp) == expected, stamp
    for stamp in (MIN_TIMESTAMP - 1, MAX_TIMESTAMP):
        with pytest.raises(ValueError, match="outside the years 1 to 9999"):
            iso_utc(stamp)


ENVELOPE_ORDER = [
    "event_id", "event_time", "event_type", "event_name",
    "anonymous_id", "user_id", "session_id",
    "properties", "traits", "context", "group_id", "previous_id",
    "ip", "method", "host", "path", "query", "user_agent", "referer", "status", "duration_ms",
    "trace_id",
    "received_at", "sent_at", "timestamp", "original_timestamp", "message_id",
    "integrations", "extra",
    "gateway",
]  # fmt: skip


def test_the_envelope_has_the_documented_members_in_order() -> None:
    # Values a client controls, with what JSON must escape.
    facts = RequestFacts(
        ip="2001:db8::1", method="POST", host='h"ost\\', path="/v1/batch\u2028",
        query="a=%22&b=\x01", user_agent="UA \u00e9\U0001f600", referer="",
    )  # fmt: skip
    segment = SegmentFields(
        traits={"name": "x"}, context={"ip": "1.2.3.4"}, group_id=None, previous_id=None,
        sent_at="2026-11-25T18:00:01.000Z", timestamp="2026-11-25T18:00:00.500Z",
        original_timestamp="2026-11-25T18:00:00.000Z", message_id="m-1",
    )  # fmt: skip
    events = [
        build_event(
            event_type="track",
            event_name=f"Viewed {i}",
            anonymous_id=None,
            session_id=None,
            user_id=f"user-{i}",
            request=facts,
            node='node-"1"',
            version="0.1.0",
            properties={"i": i, "nested": {"x": [1, None, "y"]}},
            status=201,
            duration_ms=1.5,
            received_at=1764093600.25,
            segment=segment,
        )
        for i in range(3)  # three calls of one batch share the request facts
    ]
    for i, event in enumerate(events):
        parsed = orjson.loads(event.value)
        assert list(parsed) == ENVELOPE_ORDER
        assert event.value == orjson.dumps(parsed)  # compact, as orjson writes it
        assert parsed["host"] == 'h"ost\\' and parsed["query"] == "a=%22&b=\x01"
        assert parsed["user_agent"] == "UA \u00e9\U0001f600"
        assert (parsed["user_id"], parsed["properties"]["i"], parsed["status"]) == (
            f"user-{i}",
            i,
            201,
        )
        assert parsed["gateway"] == {"node": 'node-"1"', "version": "0.1.0", "schema": 1}
        assert (parsed["event_id"], parsed["message_id"]) == (event.event_id, "m-1")


def test_event_values_take_about_their_own_size_in_memory() -> None:
    # Queued events are bounded by tracking.queue_bytes, a sum of value lengths; the
    # memory they hold must match it (orjson's own bytes would hold 4 KiB or more each).
    facts = RequestFacts("203.0.113.9", "GET", "example.com", "/img/v1/a/b", "", "UA", "")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        values = [
            build_event(
                event_type="pixel", event_name="open", anonymous_id=uuid7(), session_id=None,
                request=facts, node="n", version="1", properties={"i": i, "x": "y" * 200},
            ).value
            for i in range(2000)
        ]  # fmt: skip
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    total = sum(len(value) for value in values)
    assert total > 2000 * 500
    assert held < 1.5 * total
