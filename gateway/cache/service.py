"""A worker's cache, shared by every cached route: the memory tier, the Redis tier when
configured, the fills in progress, and the purges every worker applies. Owned by the
worker (started after the runtime, closed in the shutdown order); routes reach it
through their :class:`~gateway.cache.machine.CacheMachine`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import msgspec
from multidict import CIMultiDictProxy

from gateway.cache.collapse import Collapser
from gateway.cache.entry import Entry
from gateway.cache.key import KeySpec, variant
from gateway.cache.purge import Bans, Bus, FileBus, Purge, retrying, target
from gateway.cache.store import MemoryStore
from gateway.config import Cache
from gateway.observability.health import CheckResult
from gateway.observability.metrics import Metrics

log = logging.getLogger("gateway.cache")
KEEP = 60.0  # seconds an entry outlives its usefulness in Redis, for its validators


class CacheService:
    """One per worker."""

    def __init__(self, config: Cache, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.memory = MemoryStore(config.memory_bytes, metrics.cache_evictions.inc)
        self.collapser = Collapser()
        self.specs: dict[str, KeySpec] = {}  # route -> its key rules (purges by URL use them)
        self.bans = Bans()
        self.shared = None
        self._bus: Bus
        if config.redis is not None:
            from gateway.cache.shared import RedisTier

            self.shared = tier = RedisTier(config.redis, metrics.cache_redis_errors.labels)
            self._bus = tier
        else:
            self._bus = FileBus(config.purge_file)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.clock: Callable[[], float] = time.time  # wall time: ages are of Date headers

    async def start(self) -> None:
        self.spawn(retrying("following purges", self._follow))

    async def _follow(self) -> None:
        if self.shared is not None:
            for purge in await self.shared.recent_bans():
                self.bans.add(purge)
        await self._bus.follow(self.apply)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """A background task the worker waits for (or cancels) when it stops."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("cache: a background task failed", exc_info=exc)

    # --- entries ---

    def cached(self, key: str, headers: CIMultiDictProxy[str]) -> Entry | None:
        """The memory tier's entry for this request (no await: the hit path)."""
        names = self.memory.vary(key)
        if names is None:
            return None
        return self.memory.get(key, variant(names, headers) if names else ())

    async def lookup(self, key: str, headers: CIMultiDictProxy[str], shared: bool) -> Entry | None:
        """Memory first, then (for a shared route) the Redis tier."""
        entry = self.cached(key, headers)
        if entry is None and shared and self.shared is not None:
            entry = await self.lookup_shared(key, headers)
        return entry

    async def lookup_shared(self, key: str, headers: CIMultiDictProxy[str]) -> Entry | None:
        """Redis: what it finds is judged by the purges newer than it, and kept in memory."""
        assert self.shared is not None
        entry = await self.shared.get(key, headers)
        if entry is None:
            return None
        for purge in self.bans.newer(entry.stored_at):
            if _names(purge, entry, self.specs):
                if not purge.soft and purge.kind != "invalidate":
                    self.spawn(self.shared.delete(entry))
                    return None
                entry = _purged(entry, purge)
        self.memory.put(entry)
        self._report()
        return entry

    def store(self, entry: Entry, shared: bool) -> None:
        self.memory.put(entry)
        self._report()
        if shared and self.shared is not None:
            self.spawn(self.shared.put(entry, _redis_ttl(entry, self.clock())))

    def forget(self, entry: Entry, shared: bool) -> None:
        """An answer that may not be stored replaced this one (§4: it is gone)."""
        self.memory.remove(entry.key, entry.variant)
        self._report()
        if shared and self.shared is not None:
            self.spawn(self.shared.delete(entry))

    # --- purges ---

    async def purge(self, kind: str, value: str, *, soft: bool = False) -> int:
        """Apply a purge here, and announce it to every worker; the entries this worker
        held that it named. Raises when it cannot be announced."""
        if kind in ("url", "prefix", "invalidate"):
            host_path, query = target(value)
            value = host_path + (f"?{query}" if query else "")
        purge = Purge(kind, value, soft, self.clock())  # type: ignore[arg-type]
        count = self.apply(purge)
        await self._bus.publish(purge)
        self.metrics.cache_purges.labels(kind).inc()
        return count

    def invalidate(self, urls: list[str]) -> None:
        """§4.4, after an unsafe request succeeded: the named URIs must be validated before
        their next use: here at once, in every other worker as the purge arrives."""
        for url in urls:
            try:
                host_path, query = target(url)
            except ValueError:
                continue
            purge = Purge("invalidate", host_path + (f"?{query}" if query else ""), at=self.clock())
            self.apply(purge)
            self.metrics.cache_purges.labels("invalidate").inc()
            self.spawn(self._announce(purge))

    async def _announce(self, purge: Purge) -> None:
        try:
            await self._bus.publish(purge)
        except Exception as exc:  # this worker's tier is done; the others' entries expire
            log.warning("cache: invalidation of %s not announced: %r", purge.value, exc)

    def apply(self, purge: Purge) -> int:
        """What a purge does to this worker's memory tier."""
        self.bans.add(purge)
        if purge.kind == "tag":
            named = self.memory.by_tag(purge.value)
        elif purge.kind == "prefix":
            named = self.memory.by_prefix(purge.value.split("?", 1)[0])
        else:
            host_path = purge.value.split("?", 1)[0]
            named = [e for e in self.memory.by_url(host_path) if _names(purge, e, self.specs)]
        if purge.soft or purge.kind == "invalidate":
            for entry in named:
                self.memory.replace(_purged(entry, purge))
        else:
            self.memory.drop(named)
        self._report()
        return len(named)

    # --- the worker's side ---

    def health(self) -> CheckResult:
        """Always ok (the memory tier serves whatever Redis does); says how Redis is."""
        entries = f"{len(self.memory)} entries, {self.memory.bytes} bytes in memory"
        if self.shared is None:
            return CheckResult(True, entries)
        state = "failing: serving from memory" if self.shared.failing else "answering"
        return CheckResult(True, f"{entries}; redis {self.config.redis.url}: {state}")  # type: ignore[union-attr]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()

    def _report(self) -> None:
        self.metrics.cache_bytes.set(self.memory.bytes)
        self.metrics.cache_entries.set(len(self.memory))


def _names(purge: Purge, entry: Entry, specs: Mapping[str, KeySpec]) -> bool:
    """Whether ``purge`` names ``entry`` (a URL's query as the entry's route keys it)."""
    if purge.kind == "tag":
        return purge.value in entry.tags
    host_path, _, query = purge.value.partition("?")
    if purge.kind == "prefix":
        return entry.url.startswith(host_path)
    if entry.url != host_path:
        return False
    spec = specs.get(entry.route)
    return entry.query == (spec.query(query) if spec is not None else query)


def _purged(entry: Entry, purge: Purge) -> Entry:
    if purge.kind == "invalidate":
        return msgspec.structs.replace(entry, invalid=True)
    return msgspec.structs.replace(entry, stale_from=purge.at)


def _redis_ttl(entry: Entry, now: float) -> float:
    """Seconds an entry can still be of use: fresh, then stale within its windows, then
    kept a while for its validators."""
    left = entry.lifetime - entry.age(now)
    return max(1.0, left + max(entry.swr, entry.sie) + KEEP)
