"""``cache`` (the worker's store and the shared tier) and ``routes[].cache`` (what a proxy
route keeps of its upstream's answers, and how it keys them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, field_validator

from gateway.config.base import _TOKEN, ConfigIssue, RedisServer, _Model
from gateway.config.paths import ca_file_issue, writable_file_issue

if TYPE_CHECKING:
    from gateway.config.root import Config

Seconds = Annotated[float, Field(ge=0, le=365 * 86400)]


def _tokens(value: tuple[str, ...]) -> tuple[str, ...]:
    for i, name in enumerate(value):
        if not _TOKEN.match(name):
            raise ValueError(f"[{i}] {name!r} is not a field name")
    return value


class CacheKey(_Model):
    """What tells two requests' answers apart, beyond method, scheme, host and path."""

    query: bool = True  # the query is part of the key
    query_drop: tuple[str, ...] = ()  # parameter names (``utm_*`` globs) left out
    query_keep: tuple[str, ...] | None = None  # only these parameters count
    sort_query: bool = False  # ?a=1&b=2 and ?b=2&a=1 are one key
    headers: tuple[str, ...] = ()  # request fields added to the key
    cookies: tuple[str, ...] = ()  # cookie values added to the key

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _tokens(value)


class RouteCache(_Model):
    """A proxy route's shared cache (RFC 9111): the upstream's own headers decide what is
    stored and for how long; these keys only cover what the RFC leaves to the cache."""

    key: CacheKey = CacheKey()
    # Freshness for answers that give none (and have a heuristically cacheable status).
    default_ttl: Seconds = 0.0
    heuristic: bool = False  # RFC 9111 §4.2.2: a tenth of the time since Last-Modified
    heuristic_max: Seconds = 86400.0
    store_set_cookie: bool = False  # an answer setting a cookie is the user's own
    grace: Seconds = 0.0  # serve stale this long when the upstream fails, if allowed
    collapse: bool = True  # concurrent misses for one key make one upstream request
    collapse_timeout: Annotated[float, Field(gt=0, le=600)] = 5.0
    uncacheable_ttl: Seconds = 10.0  # a key whose answer was not stored is not collapsed
    max_entry_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1 << 20
    tag_header: str = "Surrogate-Key"  # space-separated tags for purges (or Cache-Tag)
    shared: bool = True  # with cache.redis: entries and purges shared by every instance
    name: str = "edge-gateway"  # the Cache-Status member's name

    @field_validator("tag_header")
    @classmethod
    def _tag_header(cls, value: str) -> str:
        if not _TOKEN.match(value):
            raise ValueError(f"{value!r} is not a field name")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]*", value):
            raise ValueError(f"{value!r} is not a structured-field token")
        return value


class CacheRedis(RedisServer):
    """The tier every worker and instance shares: entries stored after a miss, looked up
    after a memory miss, and purges announced to all."""

    key_prefix: str = "gwc:"
    timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 50
    max_entry_bytes: Annotated[int, Field(ge=0, le=64 << 20)] = 1 << 20


class Cache(_Model):
    """Per worker: the memory tier's size; for all: the Redis tier, and where purges go
    between the workers of an instance when there is none."""

    memory_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = 64 << 20
    redis: CacheRedis | None = None
    purge_file: str = "cache-purges.jsonl"


def checks(config: Config) -> Iterator[ConfigIssue]:
    """A cache is for proxy routes; a Redis tier's CA file loads; without Redis, the
    purge file the workers share can be written."""
    cached = False
    for i, route in enumerate(config.routes):
        if route.cache is not None:
            cached = True
            if route.proxy is None:
                yield ConfigIssue(f"routes[{i}].cache", "applies to proxy routes only")
    redis = config.cache.redis
    if redis is not None and redis.ca_file and (problem := ca_file_issue(redis.ca_file)):
        yield ConfigIssue("cache.redis.ca_file", problem)
    if cached and redis is None and (problem := writable_file_issue(config.cache.purge_file)):
        yield ConfigIssue("cache.purge_file", problem)
