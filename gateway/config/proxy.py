"""``routes[].proxy``: upstreams, balancing, health and timeouts."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    field_validator,
)

from gateway.config.base import (
    _Model,
)

if TYPE_CHECKING:
    pass


_UPSTREAM = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?/?$")


class ProxyTimeouts(_Model):
    """Seconds: to connect, to the response head, between body reads."""

    connect: Annotated[float, Field(gt=0, le=600)] = 5.0
    first_byte: Annotated[float, Field(gt=0, le=3600)] = 60.0
    idle_read: Annotated[float, Field(gt=0, le=3600)] = 60.0


class PassiveHealth(_Model):
    failures: Annotated[int, Field(ge=1, le=1000)] = 3
    window: Annotated[float, Field(gt=0, le=3600)] = 10.0
    cooldown: Annotated[float, Field(gt=0, le=3600)] = 30.0


class ActiveHealth(_Model):
    path: str = "/"
    interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    timeout: Annotated[float, Field(gt=0, le=600)] = 2.0
    expect_status: tuple[int, int] = (200, 399)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('must start with "/"')
        return value


class WeightedUpstream(_Model):
    """An upstream with a share of the traffic (canary releases: weight 1 beside 9)."""

    url: str
    weight: Annotated[int, Field(ge=1, le=1000)] = 1


class CircuitBreaker(_Model):
    """Per target: open when, over ``window`` seconds and at least ``min_requests``,
    the share of failures (errors, 5xx, or slower than ``latency_ms``) reaches
    ``error_ratio``; open for ``open_seconds`` (no requests), then one probe decides."""

    error_ratio: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_requests: Annotated[int, Field(ge=1, le=100_000)] = 20
    window: Annotated[float, Field(gt=0, le=3600)] = 10.0
    latency_ms: Annotated[float, Field(gt=0, le=3_600_000)] | None = None
    open_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0


def _as_upstream(value: object) -> object:
    # A bare URL is an upstream of weight 1: one type for all, one error path per item.
    return {"url": value} if isinstance(value, str) else value


class Proxy(_Model):
    """Reverse proxy to a pool of upstream targets."""

    # URLs, or {"url", "weight"} objects: every policy honours weights.
    upstreams: Annotated[
        tuple[
            Annotated[
                WeightedUpstream,
                # A plain URL is an upstream of weight 1 (the schema says so too).
                BeforeValidator(_as_upstream, json_schema_input_type=str | WeightedUpstream),
            ],
            ...,
        ],
        Field(min_length=1),
    ]
    policy: Literal["round_robin", "least_conn", "random_two", "ip_hash", "header_hash"] = (
        "round_robin"
    )
    hash_header: str | None = None
    strip_prefix: bool = False
    rewrite_prefix: str | None = None
    host_header: str | None = None
    forwarded: bool = False
    via: bool = False
    verify_tls: bool = True
    ca_file: str | None = None
    strict_paths: bool = True
    max_connections_per_target: Annotated[int, Field(ge=1, le=100_000)] = 256
    try_duration: Annotated[float, Field(ge=0, le=600)] = 5.0
    max_tries: Annotated[int, Field(ge=1, le=20)] = 3
    websocket_idle_timeout: Annotated[float, Field(gt=0, le=86400)] = 300.0
    timeouts: ProxyTimeouts = ProxyTimeouts()
    passive_health: PassiveHealth = PassiveHealth()
    active_health: ActiveHealth | None = None
    circuit_breaker: CircuitBreaker | None = None

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, value: tuple[WeightedUpstream, ...]) -> tuple[WeightedUpstream, ...]:
        for i, item in enumerate(value):
            if not _UPSTREAM.match(item.url):
                raise ValueError(
                    f"[{i}] {item.url!r} is not an http:// or https:// URL with a host"
                )
        return value

    @property
    def weighted(self) -> tuple[tuple[str, int], ...]:
        """(url, weight) of every upstream, in order."""
        return tuple((item.url, item.weight) for item in self.upstreams)

    @field_validator("rewrite_prefix")
    @classmethod
    def _rewrite(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError('must start with "/"')
        return value
