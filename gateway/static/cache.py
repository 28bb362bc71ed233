"""The hot-file cache: small files (and their compressed forms) kept in memory.

Keyed by request path segments, so a hot file costs no system call: each entry is
checked against the disk (path resolution, stat) at most every ``check_interval`` seconds,
off the event loop. Bounded by total bytes and by size per file, least recently used
evicted first. Larger files are not cached; the handler streams them with sendfile.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

SIDECARS = (("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz"))
TEXT_TYPES = ("text/", "application/javascript", "application/json", "image/svg+xml")


def content_type_of(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path)
    kind = guessed or "application/octet-stream"
    if kind.startswith(TEXT_TYPES) and "charset" not in kind:
        kind += "; charset=utf-8"
    return kind


@dataclass(frozen=True, slots=True)
class Located:
    """Where a request path leads: a regular file, a directory, or nothing."""

    kind: str  # "file", "dir", "missing"
    path: str = ""
    size: int = 0
    mtime_ns: int = 0


@dataclass(slots=True)
class Entry:
    """A cached file: bytes, validators, and compressed variants by coding."""

    path: str
    size: int
    mtime_ns: int
    content_type: str
    data: bytes
    variants: dict[str, bytes] = field(default_factory=dict)
    checked: float = 0.0
    key: tuple[str, ...] = ()
    # Response headers per coding (None: identity), built once by the handler.
    headers: dict[str | None, dict[str, str]] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        return f"{self.size:x}-{self.mtime_ns:x}"

    @property
    def mtime(self) -> float:
        return self.mtime_ns / 1e9

    @property
    def cost(self) -> int:
        return len(self.data) + sum(len(v) for v in self.variants.values())


class Root:
    """Resolves path segments under a root directory, symlinks included (blocking)."""

    def __init__(self, root: str, *, follow_outside: bool) -> None:
        self.real = os.path.realpath(root)
        self._follow_outside = follow_outside

    def locate(self, segments: tuple[str, ...]) -> Located:
        real = os.path.realpath(os.path.join(self.real, *segments))
        inside = real == self.real or real.startswith(self.real + os.sep)
        if not inside and not self._follow_outside:
            return Located("missing")  # a symlink out of the root: as if it were not there
        try:
            info = os.stat(real)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return Located("missing")
        if stat.S_ISDIR(info.st_mode):
            return Located("dir", real)
        if stat.S_ISREG(info.st_mode):
            return Located("file", real, info.st_size, info.st_mtime_ns)
        return Located("missing")  # sockets, devices, fifos are never served


def read_file(located: Located, max_bytes: int) -> Entry | None:
    """Read a file and its precompressed sidecars; None when it is too large to cache.
    A file rewritten while being read is read again, so bytes and validators agree."""
    for _ in range(3):
        with open(located.path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_size > max_bytes:
                return None
            data = handle.read(max_bytes + 1)
        if len(data) == info.st_size:
            break
    else:
        return None
    entry = Entry(located.path, info.st_size, info.st_mtime_ns, content_type_of(located.path), data)
    directory = os.path.dirname(located.path)
    for coding, suffix in SIDECARS:
        sidecar_path = located.path + suffix
        # A sidecar must really sit beside the file: not a symlink to somewhere else.
        if os.path.dirname(os.path.realpath(sidecar_path)) != directory:
            continue
        try:
            with open(sidecar_path, "rb") as sidecar:
                if os.fstat(sidecar.fileno()).st_size <= max_bytes:
                    entry.variants[coding] = sidecar.read(max_bytes + 1)
        except OSError:
            continue
    return entry


class FileCache:
    """LRU of :class:`Entry` by request path, within ``max_bytes`` in all."""

    def __init__(
        self,
        root: Root,
        *,
        max_bytes: int,
        max_file_bytes: int,
        check_interval: float,
        # ("hit"|"miss"|"eviction", count) or ("bytes", change in bytes held)
        report: Callable[[str, int], None] = lambda event, value: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.clock = clock  # when entries were checked (public: tests move it)
        self.max_bytes = max_bytes
        self.max_file_bytes = max_file_bytes
        self.check_interval = check_interval
        self._entries: OrderedDict[tuple[str, ...], Entry] = OrderedDict()
        self.bytes = 0
        self._report = report

    async def lookup(self, key: tuple[str, ...], located: Located | None = None) -> Entry | Located:
        """The cached entry for ``key`` (re-validated when due), or where it leads when it
        is not a cacheable file."""
        entry = self._entries.get(key)
        now = self.clock()
        if entry is not None and now - entry.checked < self.check_interval:
            self._entries.move_to_end(key)
            self._report("hit", 1)
            return entry
        loop = asyncio.get_running_loop()
        if located is None:
            located = await loop.run_in_executor(None, self.root.locate, key)
        if entry is not None:
            if located.kind == "file" and (located.path, located.size, located.mtime_ns) == (
                entry.path, entry.size, entry.mtime_ns,
            ):  # fmt: skip
                entry.checked = now
                if self._entries.get(key) is entry:
                    self._entries.move_to_end(key)
                self._report("hit", 1)
                return entry
            if self._entries.get(key) is entry:  # another request may have replaced it
                self._drop(key)
        self._report("miss", 1)
        if located.kind != "file" or located.size > self.max_file_bytes:
            return located
        fresh = await loop.run_in_executor(None, read_file, located, self.max_file_bytes)
        if fresh is None:
            return located
        fresh.checked = now
        self._store(key, fresh)
        return fresh

    def grew(self, entry: Entry, added: int) -> None:
        """An entry gained a variant (compressed on the fly): account for it."""
        if self._entries.get(entry.key) is not entry:
            return  # dropped meanwhile: its bytes are no longer ours
        self.bytes += added
        self._report("bytes", added)
        self._evict()

    def _store(self, key: tuple[str, ...], entry: Entry) -> None:
        if key in self._entries:  # a concurrent request loaded it too: keep the newest
            self._drop(key)
        entry.key = key
        self._entries[key] = entry
        self.bytes += entry.cost
        self._report("bytes", entry.cost)
        self._evict()

    def _drop(self, key: tuple[str, ...]) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.cost
        self._report("bytes", -entry.cost)

    def _evict(self) -> None:
        while self.bytes > self.max_bytes and self._entries:
            key = next(iter(self._entries))
            self._drop(key)
            self._report("eviction", 1)

    def clear(self) -> None:
        """Drop everything (the cache is being replaced), reporting the bytes freed."""
        for key in list(self._entries):
            self._drop(key)

    def __len__(self) -> int:
        return len(self._entries)
