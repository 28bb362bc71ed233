"""Purges: by URL, by prefix or by tag, hard (gone) or soft (stale from now, so a grace
or stale-while-revalidate answer may still be served while one refresh runs), and the
invalidations RFC 9111 §4.4 asks for after an unsafe request. A purge is asked of one
worker; every worker of every instance must apply it to its memory tier, so it travels
as an event: a Redis stream every worker follows when there is a Redis tier, else a
file the workers of one host follow (as links do)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

import msgspec

log = logging.getLogger("gateway.cache")

Kind = Literal["url", "prefix", "tag", "invalidate"]
FOLLOW_INTERVAL = 0.2  # seconds between reads of the purge file


class Purge(msgspec.Struct, frozen=True):
    """One purge (or §4.4 invalidation): what it names, how, and when it was asked."""

    kind: Kind
    value: str  # host/path (url, invalidate, prefix, with the query as ?...) or a tag
    soft: bool = False
    at: float = 0.0


def target(url: str) -> tuple[str, str]:
    """``(host/path, query)`` of a URL as a purge names it (scheme ignored, host lowercase):
    ``https://Example.com/a?b=1`` is ``("example.com/a", "b=1")``."""
    parts = urlsplit(url if "://" in url else f"//{url}")
    if not parts.netloc:
        raise ValueError(f"{url!r} names no host")
    return parts.netloc.lower() + (parts.path or "/"), parts.query


_ENCODE = msgspec.json.Encoder().encode
_DECODE = msgspec.json.Decoder(Purge).decode


class Bus(Protocol):
    """How purges reach every worker."""

    async def publish(self, purge: Purge) -> None: ...

    async def follow(self, apply: Callable[[Purge], object]) -> None: ...


class FileBus:
    """Purges as JSON lines in one file the workers of a host append to and follow; a
    worker starts following at the end (its memory tier starts empty)."""

    def __init__(self, path: str) -> None:
        self._path = path

    async def publish(self, purge: Purge) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._append, _ENCODE(purge))

    def _append(self, line: bytes) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line + b"\n")  # one write: lines of concurrent writers never mix
        finally:
            os.close(fd)

    async def follow(self, apply: Callable[[Purge], object]) -> None:
        loop = asyncio.get_running_loop()
        offset = await loop.run_in_executor(None, _size, self._path)
        partial = b""
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL)
            data, offset = await loop.run_in_executor(None, _read_from, self._path, offset)
            lines = (partial + data).split(b"\n")
            partial = lines.pop()
            for line in lines:
                try:
                    apply(_DECODE(line))
                except (msgspec.ValidationError, msgspec.DecodeError):
                    log.warning("ignoring a malformed line in %s", self._path)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_from(path: str, offset: int) -> tuple[bytes, int]:
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size < offset:
                offset = 0  # truncated or replaced: read it again
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return b"", 0
    return data, offset + len(data)


@dataclass(slots=True)
class Bans:
    """Recent purges, kept to judge entries stored in the shared tier before them (a
    memory tier applies a purge at once; Redis entries are checked when found)."""

    keep: float = 86400.0
    items: list[Purge] | None = None

    def add(self, purge: Purge) -> None:
        items = self.items if self.items is not None else []
        horizon = time.time() - self.keep
        self.items = [*[p for p in items if p.at >= horizon][-999:], purge]

    def newer(self, stored_at: float) -> list[Purge]:
        return [p for p in self.items or () if p.at > stored_at]


async def retrying(
    what: str, step: Callable[[], Awaitable[None]], *, first: float = 0.2, most: float = 10.0
) -> None:
    """Run ``step`` for ever, logging a failure once per episode and backing off."""
    delay, failing = first, False
    while True:
        try:
            await step()
            delay, failing = first, False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:
                log.warning("cache: %s failed (%r); retrying", what, exc)
            failing = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, most)
