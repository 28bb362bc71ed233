"""The access log writes off the loop and drops, counted, rather than block."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

import gateway.observability.accesslog as accesslog
from gateway.observability.accesslog import AccessLog, AccessRecord


def record(n: int) -> AccessRecord:
    return AccessRecord(
        remote_ip="127.0.0.1", client_ip="127.0.0.1", method="GET", host="x", uri=f"/{n}",
        proto="HTTP/1.1", status=200, size=1, bytes_sent=100, duration=0.001, route="r",
        request_id=str(n), user_agent="t",
    )  # fmt: skip


def test_lines_are_written_in_order_on_flush(tmp_path: Path) -> None:
    log = AccessLog(str(tmp_path / "a.log"))
    for n in range(3):
        log.write(record(n))
    assert (tmp_path / "a.log").read_bytes() == b""  # nothing written until flushed
    log.flush(log.take())
    log.close()
    lines = (tmp_path / "a.log").read_text().splitlines()
    assert [json.loads(line)["uri"] for line in lines] == ["/0", "/1", "/2"]


def test_lines_past_the_pending_bound_are_dropped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = len(accesslog.format_record(record(0), 0.0))
    monkeypatch.setattr(accesslog, "MAX_PENDING", size * 2)
    log = AccessLog(str(tmp_path / "a.log"))
    for n in range(5):
        log.write(record(n))
    log.close()
    assert log.dropped == 3
    assert len((tmp_path / "a.log").read_text().splitlines()) == 2


def test_pending_lines_take_about_their_own_size_in_memory(tmp_path: Path) -> None:
    # The pending bound counts bytes of lines; what they hold in memory must match it
    # (orjson's own bytes would hold 4 KiB each).
    log = AccessLog(str(tmp_path / "a.log"))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            log.write(record(n))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    pending = len(log.take())
    log.close()
    assert pending > 2000 * 200
    assert held < 1.5 * pending
