"""Shared rate limits: the same leaky buckets as ``gateway.limits.ratelimit``, kept on
Redis so that every worker of every instance charges one bucket per key.

One round trip per event-loop tick: the decisions asked for in one pass of the loop go
out together in one pipeline, each a Lua script that leaks the bucket by the time since
it was last touched (Redis's own clock, so instances' clocks do not matter), charges the
request if it fits, and lets the key expire once the bucket would be empty. Redis down
or slower than ``timeout_ms``: the request is decided by ``on_error`` (this worker's
local share by default), logged once per episode, counted, and shown in ``ready``
without failing it; the next decision tries Redis again, so recovery needs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

from gateway.config import RateLimitRule, RedisBackend
from gateway.limits.ratelimit import Limiter, Refusal
from gateway.observability.health import CheckResult

log = logging.getLogger("gateway.limits.shared")

# KEYS[1]: the bucket; ARGV: burst, drain per second. Returns {allowed, level as text}.
LEAKY_BUCKET = """
local burst = tonumber(ARGV[1])
local per_second = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1]) or 0
local at = tonumber(state[2]) or now
level = math.max(0, level - math.max(0, now - at) * per_second)
local allowed = 0
if level + 1 <= burst then
  level = level + 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(level / per_second * 1000) + 1000)
return {allowed, tostring(level)}
"""
_SHA = hashlib.sha1(LEAKY_BUCKET.encode()).hexdigest()  # what EVALSHA names it by

# One decision waiting for the tick's pipeline: key, burst, drain per second, answer.
_Pending = tuple[str, int, float, "asyncio.Future[tuple[bool, float] | None]"]


class SharedBackend:
    """The worker's Redis client and the state of its connection to it (one per worker,
    closed in the shutdown order)."""

    def __init__(self, config: RedisBackend, count_error: Callable[[str], None]) -> None:
        self.config = config
        options = config.client_options()
        # hiredis parses the replies when installed (the "redis[hiredis]" extra).
        self._client = redis.Redis.from_url(config.url, **options)
        self._timeout = config.timeout_ms / 1000
        self._count_error = count_error
        self._failing_since: float | None = None
        self._last_error = ""
        self._pending: list[_Pending] = []
        self._batches: set[asyncio.Task[None]] = set()  # in flight, held until done

    async def decide(self, key: str, burst: int, per_second: float) -> tuple[bool, float] | None:
        """Whether the request fits (then it is charged), and the bucket's level after
        it; None when Redis could not say in time."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[bool, float] | None] = loop.create_future()
        if not self._pending:
            # Sent once the loop has run every callback now ready: the requests of this
            # pass share one round trip.
            loop.call_soon(self._send)
        self._pending.append((self.config.key_prefix + key, burst, per_second, answer))
        return await answer

    def _send(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._decide_batch(batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    async def _decide_batch(self, batch: list[_Pending]) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                replies = await self._evaluate(batch)
        except (TimeoutError, RedisError, OSError) as exc:
            self._failed("timeout" if isinstance(exc, TimeoutError) else "error", exc)
            replies = [None] * len(batch)
        else:
            if self._failing_since is not None:
                log.warning(
                    "rate-limit backend %s answers again after %.1f s; shared limits resume",
                    self.config.url, time.monotonic() - self._failing_since,
                )  # fmt: skip
                self._failing_since = None
        for (*_, answer), reply in zip(batch, replies, strict=True):
            if not answer.done():  # its request may have gone
                answer.set_result(reply)

    async def _evaluate(self, batch: list[_Pending]) -> list[tuple[bool, float] | None]:
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            for key, burst, per_second, _ in batch:
                pipe.evalsha(_SHA, 1, key, burst, per_second)
            replies = await pipe.execute(raise_on_error=False)
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in replies):
                await self._client.script_load(LEAKY_BUCKET)  # a new or restarted Redis
                continue
            break
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [(bool(int(allowed)), float(level)) for allowed, level in replies]

    def _failed(self, reason: str, exc: BaseException) -> None:
        self._count_error(reason)
        self._last_error = f"{reason}: {exc!r}" if reason == "error" else reason
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "rate-limit backend %s failed (%s); deciding by on_error=%s until it answers",
                self.config.url, self._last_error, self.config.on_error,
            )  # fmt: skip

    def health(self) -> CheckResult:
        """Always ok (limits still apply by ``on_error``); the detail says how Redis is."""
        if self._failing_since is None:
            return CheckResult(True, f"redis {self.config.url}: answering")
        since = time.monotonic() - self._failing_since
        return CheckResult(
            True,
            f"redis {self.config.url}: failing for {since:.0f} s ({self._last_error}); "
            f"deciding by on_error={self.config.on_error}",
        )

    async def close(self) -> None:
        if self._batches:  # answered within timeout_ms, Redis or not
            await asyncio.wait(self._batches)
        await self._client.aclose()


class SharedLimiter:
    """A rule decided on Redis for all instances; ``fallback`` (this worker's share)
    when Redis cannot answer and ``on_error`` is ``local``."""

    def __init__(self, config: RateLimitRule, backend: SharedBackend, fallback: Limiter) -> None:
        self.burst = config.effective_burst
        self._per_second = config.rate / config.period
        self._prefix = config.name + ":"  # rules never share buckets
        self._backend = backend
        self._fallback = fallback

    @property
    def active_keys(self) -> int:
        return self._fallback.active_keys  # Redis keeps the shared ones, and expires them

    async def check(self, key: str) -> Refusal | None:
        decided = await self._backend.decide(self._prefix + key, self.burst, self._per_second)
        if decided is None:
            on_error = self._backend.config.on_error
            if on_error == "local":
                return await self._fallback.check(key)
            if on_error == "allow":
                return None
            return Refusal(limit=self.burst, remaining=0, reset=1, retry_after=1)
        allowed, level = decided
        if allowed:
            return None
        return Refusal(
            limit=self.burst,
            remaining=max(0, math.floor(self.burst - level)),
            reset=math.ceil(level / self._per_second),
            retry_after=max(1, math.ceil((level + 1 - self.burst) / self._per_second)),
        )
