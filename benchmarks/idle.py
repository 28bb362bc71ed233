"""Many idle keep-alive connections held open from this process, to see what each costs a server.

Each connection makes one request and reads the whole response, as a browser's would, then
sits idle until the pool is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

# A listen backlog is often 128-511: a 10,000-connection burst would overflow it and stall
# on SYN retransmits, so connections are opened a bounded number at a time.
OPEN_CONCURRENCY = 100
OPEN_TIMEOUT = 10.0
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
# Refused, reset, timed out, a truncated or malformed response: a failed connection, counted.
_OPEN_ERRORS = (OSError, TimeoutError, EOFError, ValueError, IndexError, asyncio.LimitOverrunError)


def raise_open_files_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit and return it.

    Servers started afterwards inherit the raised limit, so they can take the pool too.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@dataclass(frozen=True, slots=True)
class IdlePool:
    """How many connections are open and idle, and how many could not be opened (and why)."""

    opened: int
    failed: int
    first_error: str | None


@contextlib.asynccontextmanager
async def idle_connections(port: int, path: str, count: int) -> AsyncIterator[IdlePool]:
    """Open ``count`` connections to 127.0.0.1:``port``, each after one ``GET path``.

    On exit every connection is reset, also when opening them failed or was cancelled.
    """
    writers: list[asyncio.StreamWriter] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one() -> None:
        async with gate:
            try:
                writers.append(await _open_after_request(port, path))
            except _OPEN_ERRORS as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(open_one())
        yield IdlePool(len(writers), len(errors), errors[0] if errors else None)
    finally:
        await _reset_all(writers)


async def _open_after_request(port: int, path: str) -> asyncio.StreamWriter:
    async with asyncio.timeout(OPEN_TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            await _read_response(reader)
        except BaseException:
            writer.transport.abort()
            raise
    return writer


async def _read_response(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = status_line.split(" ", 2)[1]
    if not status.startswith("2"):
        raise ValueError(f"answered {status}")
    length = None
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise ValueError("no Content-Length; a chunked body is not expected here")
    await reader.readexactly(length)


async def _reset_all(writers: list[asyncio.StreamWriter]) -> None:
    # A reset frees both ends at once: no TIME_WAIT sockets pile up for the next server's
    # run, and the server under test sees every connection gone immediately.
    for writer in writers:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        writer.transport.abort()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(OPEN_TIMEOUT):
            await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
