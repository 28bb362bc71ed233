"""``routes[].proxy``: upstreams, balancing, health and timeouts."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
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


class Proxy(_Model):
    """Reverse proxy to a pool of upstream targets."""

    upstreams: Annotated[tuple[str, ...], Field(min_length=1)]
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

    @field_validator("upstreams")
    @classmethod
    def _upstreams(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, url in enumerate(value):
            if not _UPSTREAM.match(url):
                raise ValueError(f"[{i}] {url!r} is not an http:// or https:// URL with a host")
        return value

    @field_validator("rewrite_prefix")
    @classmethod
    def _rewrite(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError('must start with "/"')
        return value
