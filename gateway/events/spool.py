"""The disk spool: an append-only, checksummed log in rotated segment files.

Records that could not reach Kafka (or that wait for it to come back) are appended here
and fsynced before anyone is told they are safe. Each record is framed as
``length (u32) | crc32 (u32) | topic length (u16) | key length (u16) | topic | key | value``,
so a torn write at the tail of a segment (power cut, SIGKILL mid-write) is detected on
reading and cut off, never replayed as garbage. Segments are replayed oldest first and
deleted once Kafka acknowledged every record in them.

Blocking file I/O: callers run these methods on one dedicated thread, never the loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

_FRAME = struct.Struct(">II")
_FIELDS = struct.Struct(">HH")
MAX_RECORD = 16 << 20  # a length past this is corruption, not a record
FRAMING = _FRAME.size + _FIELDS.size  # bytes a record takes beside topic, key and value
# At most what an event's record headers take in the spool (see envelope.record_headers:
# four short names and values; the longest event type and source are under 16 bytes).
HEADER_BYTES = 96


log = logging.getLogger("gateway.events")


class SpoolError(Exception):
    """The spool cannot be used (directory locked by another process, unwritable)."""


class SpoolFull(SpoolError):
    """Appending would pass ``max_bytes``."""


@dataclass(slots=True)  # not frozen: built per event (see envelope.RequestFacts)
class SpoolRecord:
    topic: str
    key: bytes
    value: bytes
    keyed: bool = True  # not stored: a replayed record is partitioned by its key
    # Kafka record headers, stored with the record. A list: aiokafka takes no other.
    headers: list[tuple[str, bytes]] = field(default_factory=list)


_HAS_HEADERS = 0x8000  # in the topic length field, which never needs its top bit
_HEADERS_LEN = struct.Struct(">H")


def encode_headers(headers: list[tuple[str, bytes]]) -> bytes:
    """``name=value`` lines; names are ours (no "=" or newline), values too."""
    return b"\n".join(name.encode() + b"=" + value for name, value in headers)


def _decode_headers(block: bytes) -> list[tuple[str, bytes]]:
    pairs = (line.partition(b"=") for line in block.split(b"\n") if line)
    return [(name.decode(errors="replace"), value) for name, _, value in pairs]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What opening the spool found left over from before."""

    segments: int
    records: int
    corrupt_bytes: int


def encode(record: SpoolRecord) -> bytes:
    topic = record.topic.encode()
    if record.headers:  # a record of an older spool has none, and still decodes
        block = encode_headers(record.headers)
        fields = _FIELDS.pack(len(topic) | _HAS_HEADERS, len(record.key))
        fields += _HEADERS_LEN.pack(len(block)) + block
    else:
        fields = _FIELDS.pack(len(topic), len(record.key))
    payload = fields + topic + record.key + record.value
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def decode_all(data: bytes) -> tuple[list[SpoolRecord], int]:
    """Every intact record from the start, and the offset where intact data ends."""
    records: list[SpoolRecord] = []
    offset = 0
    while offset + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, offset)
        start, end = offset + _FRAME.size, offset + _FRAME.size + length
        if length < _FIELDS.size or length > MAX_RECORD or end > len(data):
            break
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            break
        topic_len, key_len = _FIELDS.unpack_from(payload)
        body = _FIELDS.size
        headers: list[tuple[str, bytes]] = []
        if topic_len & _HAS_HEADERS:
            topic_len &= ~_HAS_HEADERS
            if body + _HEADERS_LEN.size > length:
                break
            (block_len,) = _HEADERS_LEN.unpack_from(payload, body)
            body += _HEADERS_LEN.size
            headers = _decode_headers(payload[body : body + block_len])
            body += block_len
        if body + topic_len + key_len > length:
            break
        topic = payload[body : body + topic_len].decode(errors="replace")
        key = payload[body + topic_len : body + topic_len + key_len]
        value = payload[body + topic_len + key_len :]
        records.append(SpoolRecord(topic, key, value, headers=headers))
        offset = end
    return records, offset


class Spool:
    """One process's spool directory; a lock file keeps a second process out."""

    def __init__(self, directory: str | os.PathLike[str], segment_bytes: int, max_bytes: int):
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self._lock_fd: int | None = None
        self._active: Path | None = None
        self._active_fd: int | None = None
        self._active_size = 0
        self._sealed_bytes = 0
        self._next_seq = 1
        self.corrupt_bytes = 0

    @property
    def total_bytes(self) -> int:
        return self._sealed_bytes + self._active_size

    def open(self) -> Recovery:
        """Lock the directory, check every leftover segment (cutting corrupt tails), and
        start a fresh active segment. Leftovers become sealed segments to replay."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolError(f"{self.directory} is in use by another process") from None
        self._lock_fd = fd
        records = segments = 0
        for path in self._segment_paths():
            data = path.read_bytes()
            found, good = decode_all(data)
            if good < len(data):
                self.corrupt_bytes += len(data) - good
                with open(path, "r+b") as handle:
                    handle.truncate(good)
                    os.fsync(handle.fileno())
            if not found:
                path.unlink()
                continue
            records += len(found)
            segments += 1
            self._sealed_bytes += good
            self._next_seq = max(self._next_seq, int(path.stem) + 1)
        self._start_segment()
        return Recovery(segments, records, self.corrupt_bytes)

    def append(self, records: Iterable[SpoolRecord], *, fsync: bool = True) -> None:
        """Append records to the active segment; with ``fsync`` they survive a crash
        once this returns. Raises :class:`SpoolFull` (writing nothing) past ``max_bytes``."""
        data = b"".join(encode(record) for record in records)
        if self.total_bytes + len(data) > self.max_bytes:
            raise SpoolFull(f"spool would pass its {self.max_bytes} byte cap")
        if self._active_size and self._active_size + len(data) > self.segment_bytes:
            self.rotate()
        assert self._active_fd is not None
        try:
            written = 0
            while written < len(data):  # os.write may write less than asked (disk full)
                written += os.write(self._active_fd, data[written:])
            if fsync:
                os.fsync(self._active_fd)
        except OSError as exc:
            # Cut back to the last whole record, so nothing torn sits before later ones.
            with contextlib.suppress(OSError):
                os.ftruncate(self._active_fd, self._active_size)
            raise SpoolError(f"spool write failed: {exc.strerror or exc}") from None
        self._active_size += len(data)

    def rotate(self) -> bool:
        """Seal the active segment (if it holds anything) so it can be replayed."""
        if not self._active_size:
            return False
        assert self._active_fd is not None
        os.fsync(self._active_fd)
        os.close(self._active_fd)
        self._sealed_bytes += self._active_size
        self._start_segment()
        return True

    def sealed(self) -> list[Path]:
        """Sealed segments, oldest first."""
        return [p for p in self._segment_paths() if p != self._active]

    def read(self, segment: Path) -> list[SpoolRecord]:
        records, _ = decode_all(segment.read_bytes())
        return records

    def delete(self, segment: Path) -> None:
        size = segment.stat().st_size
        segment.unlink()
        self._sealed_bytes = max(0, self._sealed_bytes - size)

    def close(self) -> None:
        if self._active_fd is not None:
            os.fsync(self._active_fd)
            os.close(self._active_fd)
            self._active_fd = None
            if self._active is not None and not self._active_size:
                self._active.unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _segment_paths(self) -> Iterator[Path]:
        return iter(sorted(self.directory.glob("*.seg")))

    def _start_segment(self) -> None:
        self._active = self.directory / f"{self._next_seq:020d}.seg"
        self._next_seq += 1
        self._active_fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._active_size = 0


def adopt_orphans(root: Path, workers: int, into: Spool) -> int:
    """Move the records of spool directories no worker owns any more (``worker-N`` with
    N >= ``workers``, left by a run with more workers) into ``into``; return how many.
    A directory still locked by a live process is left alone."""
    moved = 0
    for path in sorted(root.glob("worker-*")):
        suffix = path.name.removeprefix("worker-")
        if not suffix.isdigit() or int(suffix) < workers:
            continue
        orphan = Spool(path, into.segment_bytes, into.max_bytes)
        try:
            orphan.open()
        except SpoolError:
            continue
        try:
            for segment in orphan.sealed():
                records = orphan.read(segment)
                into.append(records)
                orphan.delete(segment)
                moved += len(records)
        finally:
            orphan.close()
    return moved


def read_all(root: Path) -> Iterator[tuple[Path, SpoolRecord]]:
    """Every intact record under a spool root, by worker and segment, without locking:
    for looking at what the spool holds (``gateway spool``), not for replaying it."""
    for directory in sorted(root.glob("worker-*")):
        for segment in sorted(directory.glob("*.seg")):
            records, _ = decode_all(segment.read_bytes())
            for record in records:
                yield segment, record


def open_spool(spool: Spool, root: Path, adopt_from: int) -> Recovery:
    """Open ``spool`` and, with ``adopt_from`` (the worker count; 0: not this worker's
    job), take over the spools of worker slots past it; log what is left to replay."""
    recovery = spool.open()
    if adopt_from:
        adopted = adopt_orphans(root, adopt_from, spool)
        if adopted:
            log.warning("spool: took over %d event(s) from removed worker slots", adopted)
            spool.rotate()
            recovery = dataclasses.replace(recovery, records=recovery.records + adopted)
    if recovery.records or recovery.corrupt_bytes:
        log.warning(
            "spool: %d event(s) in %d segment(s) to replay; %d corrupt byte(s) cut",
            recovery.records, recovery.segments, recovery.corrupt_bytes,
        )  # fmt: skip
    return recovery
