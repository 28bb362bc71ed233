"""Event ids and times: formatted by hand for speed, so checked against the standard."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from gateway.events.envelope import iso_utc, uuid7


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
