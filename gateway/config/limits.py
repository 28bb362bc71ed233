"""``rate_limits``: the rules routes refer to by name."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    Field,
    field_validator,
)

from gateway.config.base import (
    _TOKEN,
    ConfigIssue,
    Name,
    RedisServer,
    _check_cidrs,
    _Model,
)
from gateway.config.paths import ca_file_issue

if TYPE_CHECKING:
    from gateway.config.root import Config


_KEY_PARTS = ("client_ip", "route", "write_key", "header:<Name>")


class RateLimitRule(_Model):
    """A named rate limit: ``rate`` requests per ``period`` seconds, ``burst`` at once."""

    name: Name
    rate: Annotated[float, Field(gt=0, le=1e9)]
    period: Annotated[float, Field(gt=0, le=86400)] = 1.0
    burst: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    key: Annotated[tuple[str, ...], Field(min_length=1)] = ("client_ip",)
    ipv6_prefix: Annotated[int, Field(ge=1, le=128)] = 64
    exempt: tuple[str, ...] = ()
    dry_run: bool = False
    max_keys: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    # Decided on rate_limits.backend (Redis), for every instance together.
    shared: bool = False

    @field_validator("key")
    @classmethod
    def _key(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, part in enumerate(value):
            header = part.removeprefix("header:")
            if part in _KEY_PARTS[:3] or (header != part and _TOKEN.match(header)):
                continue
            raise ValueError(f"[{i}] {part!r} is not one of {', '.join(_KEY_PARTS)}")
        return value

    @field_validator("exempt")
    @classmethod
    def _exempt(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_cidrs(value)

    @property
    def effective_burst(self) -> int:
        """``burst``, or by default one period's worth of requests."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.rate))


class LocalBackend(_Model):
    """Every worker keeps its share of each limit (aiolimiter buckets)."""

    kind: Literal["local"] = "local"


class RedisBackend(RedisServer):
    """Shared rules are decided on Redis, for all instances: one round trip per event-loop
    tick of a worker, for the decisions its requests asked for in it."""

    kind: Literal["redis"]
    key_prefix: str = "gw:"
    timeout_ms: Annotated[int, Field(ge=1, le=10_000)] = 20
    # Redis down or slower than timeout_ms: this worker's share ("local"), or let the
    # request through ("allow"), or refuse it ("deny").
    on_error: Literal["local", "allow", "deny"] = "local"


class RateLimits(_Model):
    """The named rules routes refer to by name, and where shared rules are decided."""

    backend: Annotated[LocalBackend | RedisBackend, Field(discriminator="kind")] = LocalBackend()
    rules: tuple[RateLimitRule, ...] = ()


def checks(config: Config) -> Iterator[ConfigIssue]:
    """Rule names are unique."""
    rule_names: dict[str, int] = {}
    for i, rule in enumerate(config.rate_limits.rules):
        if rule.name in rule_names:
            yield ConfigIssue(
                f"rate_limits.rules[{i}].name",
                f"duplicate rule name {rule.name!r} "
                f"(also rate_limits.rules[{rule_names[rule.name]}])",
            )
        rule_names.setdefault(rule.name, i)
        if rule.shared and config.rate_limits.backend.kind != "redis":
            yield ConfigIssue(
                f"rate_limits.rules[{i}].shared", 'needs rate_limits.backend {"kind": "redis"}'
            )
    backend = config.rate_limits.backend
    if backend.kind == "redis" and backend.ca_file and (problem := ca_file_issue(backend.ca_file)):
        yield ConfigIssue("rate_limits.backend.ca_file", problem)
