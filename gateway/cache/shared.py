"""The Redis tier: entries every worker and instance shares, and the stream of purges.

Looked up only after a memory miss, in one round trip when the key's answers do not
vary (two when they do and this worker has not seen the key); written after a miss in
the background, never on the request path. Each key's ``Vary`` names sit beside its
entries; every entry expires when it could no longer be served, stale or not. Purges
go to a stream every worker follows (and to a sorted set of recent bans, so an entry a
worker finds later is judged by the purges newer than it). Redis down or slow: the
memory tier serves on its own, the outage is logged once and counted, and Redis is left
alone for a second before it is tried again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as redis
from multidict import CIMultiDictProxy
from redis.exceptions import RedisError

from gateway.cache.entry import Entry, dumps, loads
from gateway.cache.key import Variant, variant
from gateway.cache.purge import Purge
from gateway.config import CacheRedis

log = logging.getLogger("gateway.cache")

PAUSE = 1.0  # seconds Redis is left alone after it failed
STREAM_LENGTH = 10_000  # purges kept in the stream (approximately)
BAN_SECONDS = 86400.0  # how long a purge is kept to judge entries stored before it
_DECODE_PURGE = msgspec.json.Decoder(Purge).decode
_ENCODE = msgspec.json.Encoder().encode


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _variant_digest(values: Variant) -> str:
    if not values:
        return "-"
    return hashlib.blake2b(_ENCODE(values), digest_size=8).hexdigest()


class RedisTier:
    """One worker's client of the shared tier."""

    def __init__(self, config: CacheRedis, count_error: Callable[[str], object]) -> None:
        self.config = config
        options = config.client_options()
        self._client = redis.Redis.from_url(config.url, **options)
        # Its own connection: a follower blocks on XREAD for up to a second at a time.
        self._follower = redis.Redis.from_url(config.url, **options)
        self._prefix = config.key_prefix
        self._timeout = config.timeout_ms / 1000
        self._count_error = count_error
        self._paused_until = 0.0
        self._failing_since: float | None = None
        self._known_vary: dict[str, tuple[str, ...]] = {}  # key digest -> Vary names

    async def get(self, key: str, headers: CIMultiDictProxy[str]) -> Entry | None:
        """The entry for this request, or None (nothing stored, or Redis cannot say)."""
        if time.monotonic() < self._paused_until:
            return None
        digest = _digest(key)
        names = self._known_vary.get(digest)
        try:
            async with asyncio.timeout(self._timeout):
                if names is None:
                    pipe = self._client.pipeline(transaction=False)
                    pipe.get(f"{self._prefix}v:{digest}")
                    pipe.get(f"{self._prefix}e:{digest}:-")
                    raw_names, raw = await pipe.execute()
                    if raw_names is None:
                        return None
                    names = tuple(msgspec.json.decode(raw_names, type=tuple[str, ...]))
                    self._remember(digest, names)
                    if names:
                        raw = await self._client.get(self._entry_key(digest, names, headers))
                else:
                    raw = await self._client.get(self._entry_key(digest, names, headers))
        except (TimeoutError, RedisError, OSError, msgspec.DecodeError) as exc:
            self._failed(exc)
            return None
        self._answered()
        return loads(raw) if raw is not None else None

    def _entry_key(
        self, digest: str, names: tuple[str, ...], headers: CIMultiDictProxy[str]
    ) -> str:
        return f"{self._prefix}e:{digest}:{_variant_digest(variant(names, headers))}"

    def _remember(self, digest: str, names: tuple[str, ...]) -> None:
        if len(self._known_vary) >= 100_000:
            self._known_vary.clear()
        self._known_vary[digest] = names

    async def put(self, entry: Entry, ttl: float) -> None:
        """Store ``entry`` for ``ttl`` seconds (background: errors are counted, not raised)."""
        if len(entry.body) > self.config.max_entry_bytes or time.monotonic() < self._paused_until:
            return
        digest = _digest(entry.key)
        milliseconds = max(1000, int(ttl * 1000))
        try:
            async with asyncio.timeout(self._timeout * 4):
                pipe = self._client.pipeline(transaction=False)
                pipe.set(f"{self._prefix}v:{digest}", _ENCODE(entry.vary), px=milliseconds)
                key = f"{self._prefix}e:{digest}:{_variant_digest(entry.variant)}"
                pipe.set(key, dumps(entry), px=milliseconds)
                await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(exc)
            return
        self._remember(digest, entry.vary)
        self._answered()

    async def delete(self, entry: Entry) -> None:
        digest = _digest(entry.key)
        try:
            async with asyncio.timeout(self._timeout * 4):
                await self._client.unlink(
                    f"{self._prefix}e:{digest}:{_variant_digest(entry.variant)}"
                )
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed(exc)

    async def publish(self, purge: Purge) -> None:
        """Announce a purge to every worker; raises when Redis cannot take it (the admin
        API then says so: a purge that reached some workers only is no purge)."""
        async with asyncio.timeout(self._timeout * 10):
            pipe = self._client.pipeline(transaction=False)
            pipe.xadd(f"{self._prefix}events", {"purge": _ENCODE(purge)},
                      maxlen=STREAM_LENGTH, approximate=True)  # fmt: skip
            pipe.zadd(f"{self._prefix}bans", {_ENCODE(purge): purge.at})
            pipe.zremrangebyscore(f"{self._prefix}bans", 0, purge.at - BAN_SECONDS)
            await pipe.execute()

    async def recent_bans(self) -> list[Purge]:
        """The purges of the last day, to judge entries this worker will find."""
        raw: Any = await self._follower.zrangebyscore(
            f"{self._prefix}bans", time.time() - BAN_SECONDS, "+inf"
        )
        return [_DECODE_PURGE(item) for item in raw]

    async def follow(self, apply: Callable[[Purge], object]) -> None:
        """Apply every purge announced from now on (returns only on an error)."""
        stream = f"{self._prefix}events"
        last = "$"
        while True:
            replies: Any = await self._follower.xread({stream: last}, block=1000, count=100)
            for _, messages in replies or ():
                for message_id, fields in messages:
                    last = message_id
                    try:
                        apply(_DECODE_PURGE(fields[b"purge"]))
                    except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                        log.warning("cache: ignoring a malformed purge event %r", message_id)

    def _failed(self, exc: BaseException) -> None:
        reason = "timeout" if isinstance(exc, TimeoutError) else "error"
        self._count_error(reason)
        self._paused_until = time.monotonic() + PAUSE
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "cache: redis %s failed (%s: %r); serving from memory until it answers",
                self.config.url, reason, exc,
            )  # fmt: skip

    def _answered(self) -> None:
        if self._failing_since is not None:
            log.warning(
                "cache: redis %s answers again after %.1f s",
                self.config.url, time.monotonic() - self._failing_since,
            )  # fmt: skip
            self._failing_since = None

    @property
    def failing(self) -> bool:
        return self._failing_since is not None

    async def close(self) -> None:
        await self._client.aclose()
        await self._follower.aclose()
