"""JSON access log: one line per answered request, with Caddy-like field names.

Lines go to a buffered binary stream flushed by the owner about once a second and at
shutdown, so a request never waits on a log write syscall of its own.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

import orjson

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
    return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


class AccessLog:
    """Writes access records to ``path`` ("-" is standard output), buffered."""

    def __init__(self, path: str) -> None:
        self.path = path
        if path == "-":
            self._stream: IO[bytes] = open(1, "ab", buffering=1 << 16, closefd=False)  # noqa: SIM115
        else:
            self._stream = open(path, "ab", buffering=1 << 16)  # noqa: SIM115

    def write(self, record: AccessRecord) -> None:
        self._stream.write(format_record(record, time.time()))

    def flush(self) -> None:
        # A vanished stdout reader or a closed stream must not take serving down with it.
        with contextlib.suppress(BrokenPipeError, ValueError):
            self._stream.flush()

    def close(self) -> None:
        self.flush()
        self._stream.close()
