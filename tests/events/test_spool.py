"""The disk spool: checksummed records survive, a torn tail is cut, never replayed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.events.spool import Spool, SpoolError, SpoolFull, SpoolRecord, encode

RECORDS = [SpoolRecord("events", f"k{i}".encode(), b'{"n":%d}' % i) for i in range(5)]


def opened(path: Path, segment_bytes: int = 1 << 20, max_bytes: int = 1 << 30) -> Spool:
    spool = Spool(path, segment_bytes, max_bytes)
    spool.open()
    return spool


def test_records_round_trip_through_a_sealed_segment(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.append(RECORDS)
    assert spool.sealed() == []
    assert spool.rotate() is True
    (segment,) = spool.sealed()
    assert spool.read(segment) == RECORDS
    spool.delete(segment)
    assert spool.total_bytes == 0
    spool.close()


def test_leftovers_are_found_on_reopen(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    spool.append(RECORDS)
    spool.close()
    again = Spool(tmp_path, 1 << 20, 1 << 30)
    recovery = again.open()
    assert (recovery.segments, recovery.records, recovery.corrupt_bytes) == (1, 5, 0)
    assert [r for s in again.sealed() for r in again.read(s)] == RECORDS
    again.close()


@pytest.mark.parametrize(
    "tail",
    [
        encode(RECORDS[0])[:-3],  # torn write: record cut short
        b"\xff" * 40,  # garbage length
        encode(RECORDS[0])[:8] + b"X" + encode(RECORDS[0])[9:],  # flipped payload byte
    ],
    ids=["torn", "garbage", "bad-checksum"],
)
def test_corrupt_tail_is_cut_and_counted(tmp_path: Path, tail: bytes) -> None:
    spool = opened(tmp_path)
    spool.append(RECORDS)
    spool.close()
    (segment,) = sorted(tmp_path.glob("*.seg"))
    good_size = segment.stat().st_size
    with open(segment, "ab") as handle:
        handle.write(tail)
    again = Spool(tmp_path, 1 << 20, 1 << 30)
    recovery = again.open()
    assert (recovery.records, recovery.corrupt_bytes) == (5, len(tail))
    assert segment.stat().st_size == good_size
    assert again.read(segment) == RECORDS
    again.close()


def test_segments_rotate_at_size(tmp_path: Path) -> None:
    size = len(encode(RECORDS[0]))
    spool = opened(tmp_path, segment_bytes=size * 2)
    for record in RECORDS:
        spool.append([record])
    spool.rotate()
    segments = spool.sealed()
    assert [len(spool.read(s)) for s in segments] == [2, 2, 1]
    assert [r for s in segments for r in spool.read(s)] == RECORDS
    spool.close()


def test_full_spool_refuses_and_writes_nothing(tmp_path: Path) -> None:
    size = len(encode(RECORDS[0]))
    spool = opened(tmp_path, max_bytes=size * 2)
    spool.append(RECORDS[:2])
    with pytest.raises(SpoolFull):
        spool.append(RECORDS[2:3])
    assert spool.total_bytes == size * 2
    spool.close()


def test_second_process_cannot_share_a_spool(tmp_path: Path) -> None:
    spool = opened(tmp_path)
    with pytest.raises(SpoolError, match="in use by another process"):
        Spool(tmp_path, 1 << 20, 1 << 30).open()
    spool.close()


def test_record_headers_are_stored_and_older_records_without_them_still_read(
    tmp_path: Path,
) -> None:
    from gateway.events.envelope import record_headers
    from gateway.events.spool import FRAMING, HEADER_BYTES, decode_all, encode_headers

    headers = record_headers("dead_letter", "segment")  # the longest type there is
    with_headers = SpoolRecord("events", b"k", b"{}", headers=headers)
    older = SpoolRecord("events", b"k", b"{}")
    data = encode(older) + encode(with_headers)
    records, end = decode_all(data)
    assert (records, end) == ([older, with_headers], len(data))
    assert records[1].headers == [
        ("event_type", b"dead_letter"),
        ("schema", b"1"),
        ("content-type", b"application/json"),
        ("source", b"segment"),
    ]
    # The pipeline's room estimate holds what headers really take.
    assert len(encode(with_headers)) - len(encode(older)) <= HEADER_BYTES
    assert len(encode(older)) == FRAMING + len("events") + 1 + 2
    assert 2 + len(encode_headers(headers)) <= HEADER_BYTES


def test_a_traced_records_headers_take_no_more_than_the_pipelines_estimate() -> None:
    from gateway.events.envelope import TRACE_HEADER_BYTES, traced_headers
    from gateway.events.spool import HEADER_BYTES

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    headers = traced_headers("dead_letter", "segment", trace_id)  # the longest type there is
    assert headers[-1] == ("trace_id", trace_id.encode())
    # One request's events share one list; another request's trace gets its own.
    assert traced_headers("dead_letter", "segment", trace_id) is headers
    other = traced_headers("dead_letter", "segment", "0" * 31 + "1")
    assert other is not headers and other[:-1] == headers[:-1]
    traced = SpoolRecord("events", b"k", b"{}", headers=headers)
    plain = SpoolRecord("events", b"k", b"{}")
    assert len(encode(traced)) - len(encode(plain)) <= HEADER_BYTES + TRACE_HEADER_BYTES
