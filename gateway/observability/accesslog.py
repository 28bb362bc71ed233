"""JSON access log: one line per answered request, with Caddy-like field names.

Lines go to a buffered binary stream flushed by the owner about once a second and at
shutdown, so a request never waits on a log write syscall of its own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import orjson

from gateway.jsonbytes import dumps_kept

REDACTED = "REDACTED"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """What the access log says about one request."""

    remote_ip: str
    client_ip: str
    method: str
    host: str
    uri: str
    proto: str
    status: int
    size: int
    bytes_sent: int
    duration: float
    route: str
    request_id: str
    user_agent: str
    headers: Mapping[str, str] | None = None
    rate_limited: str | None = None
    trace_id: str | None = None
    user: str | None = None  # who basic_auth let in


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers for the log, with credentials replaced."""
    return {
        # str(): multidict's keys are an str subclass that orjson refuses.
        str(name): REDACTED if name.lower() in _SECRET_HEADERS else value
        for name, value in headers.items()
    }


def format_record(record: AccessRecord, now: float) -> bytes:
    entry: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        + f".{int(now % 1 * 1000):03d}Z",
        "remote_ip": record.remote_ip,
        "client_ip": record.client_ip,
        "method": record.method,
        "host": record.host,
        "uri": record.uri,
        "proto": record.proto,
        "status": record.status,
        "size": record.size,
        "bytes_sent": record.bytes_sent,
        "duration": round(record.duration, 6),
        "route": record.route,
        "request_id": record.request_id,
        "user_agent": record.user_agent,
    }
    if record.headers is not None:
        entry["headers"] = record.headers
    if record.rate_limited is not None:
        entry["rate_limited"] = record.rate_limited
    if record.trace_id is not None:
        entry["trace_id"] = record.trace_id
    if record.user is not None:
        entry["user"] = record.user
    # Kept until the next flush (see jsonbytes).
    return dumps_kept(entry, option=orjson.OPT_APPEND_NEWLINE)


MAX_PENDING = 8 << 20  # bytes of lines waiting; past it lines are dropped and counted


class AccessLog:
    """Access records to ``path`` ("-" is standard output). Lines collect in memory and
    are written by :meth:`flush` (run off the loop), so a slow reader of the log (a full
    pipe to a log collector) can never stall serving; it can only cost lines, counted."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path == "-":
            self._stream: IO[bytes] = open(1, "ab", buffering=0, closefd=False)  # noqa: SIM115
        else:
            self._stream = open(path, "ab", buffering=0)  # noqa: SIM115
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._writing = threading.Lock()  # one flush at a time, in order
        self.dropped = 0

    def write(self, record: AccessRecord) -> None:
        line = format_record(record, time.time())
        if self._pending_bytes + len(line) > MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append(line)
        self._pending_bytes += len(line)

    def take(self) -> bytes:
        """The lines written so far, for :meth:`flush` (on the loop: cheap)."""
        data = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        return data

    def flush(self, data: bytes | None = None) -> None:
        """Write ``data`` (default: everything pending). Blocking: run it off the loop."""
        if data is None:
            data = self.take()
        if not data:
            return
        # A vanished stdout reader or a closed stream must not take serving down with it.
        with self._writing, contextlib.suppress(BrokenPipeError, ValueError, OSError):
            view = memoryview(data)
            while view:
                written = self._stream.write(view)
                view = view[written or len(view) :]

    def close(self) -> None:
        self.flush()
        self._stream.close()
