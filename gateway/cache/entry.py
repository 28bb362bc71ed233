"""A stored answer: its head as received (less what may not be stored), its whole body,
and what was decided about it when it was stored, so that a hit only does arithmetic.
Entries cross process boundaries (the Redis tier) as one msgpack head and the body."""

from __future__ import annotations

import struct

import msgspec

from gateway.cache.key import Variant
from gateway.cache.rules import Freshness

MAGIC = b"GWC1"
_HEAD_LENGTH = struct.Struct(">I")
OVERHEAD = 400  # bytes of an entry beyond its body and fields, for the memory bound


class Entry(msgspec.Struct):
    """One stored variant of one key."""

    key: str  # the primary key (gateway.cache.key)
    route: str
    url: str  # host and path, lowercase host: what a purge by URL or prefix names
    query: str  # the query as the key sees it
    vary: tuple[str, ...]  # the fields it varies on
    variant: Variant  # the storing request's values of them
    status: int
    fields: tuple[tuple[str, str], ...]  # the stored head, in order, without Age
    body: bytes
    request_time: float  # wall clock: entries are shared between processes
    response_time: float
    initial_age: float  # RFC 9111 §4.2.3 corrected_initial_age
    lifetime: float
    heuristic: bool
    no_cache: bool
    revalidate: bool  # never served stale (must-/proxy-revalidate, s-maxage, no-cache)
    swr: float
    sie: float
    auth_ok: bool  # may answer a request that carries Authorization (§3.5)
    etag: str | None
    last_modified: str | None
    tags: tuple[str, ...]
    stored_at: float
    stale_from: float | None = None  # a soft purge: stale from then on
    invalid: bool = False  # §4.4 invalidated: validate before any use

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(n) + len(v) for n, v in self.fields) + OVERHEAD

    def age(self, now: float) -> float:
        """§4.2.3 current_age."""
        return self.initial_age + max(0.0, now - self.response_time)

    def staleness(self, now: float) -> float:
        """Seconds past its freshness (negative while fresh); a soft purge ends freshness."""
        past = self.age(now) - self.lifetime
        if self.stale_from is not None:
            past = max(past, now - self.stale_from)
        return past

    def refreshed(self, freshness: Freshness, **changes: object) -> Entry:
        """A copy with a 304's head merged in (``changes``) and its freshness."""
        return msgspec.structs.replace(
            self,
            lifetime=freshness.lifetime,
            heuristic=freshness.heuristic,
            no_cache=freshness.no_cache,
            revalidate=freshness.revalidate,
            swr=freshness.swr,
            sie=freshness.sie,
            stale_from=None,
            invalid=False,
            **changes,
        )


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Entry)


def dumps(entry: Entry) -> bytes:
    """``GWC1``, the head's length, the head (msgpack, without the body), the body."""
    head = _ENCODER.encode(msgspec.structs.replace(entry, body=b""))
    return MAGIC + _HEAD_LENGTH.pack(len(head)) + head + entry.body


def loads(data: bytes) -> Entry | None:
    """An entry from :func:`dumps`, or None for anything else (another version)."""
    if not data.startswith(MAGIC) or len(data) < 8:
        return None
    (length,) = _HEAD_LENGTH.unpack_from(data, 4)
    try:
        entry = _DECODER.decode(data[8 : 8 + length])
    except msgspec.DecodeError:
        return None
    return msgspec.structs.replace(entry, body=data[8 + length :])
