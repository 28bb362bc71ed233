"""``routes``: what a request matches and which handler answers it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
)

from gateway.config.base import (
    _HOST_PATTERN,
    _TOKEN,
    ConfigIssue,
    Name,
    _Model,
)
from gateway.config.cache import RouteCache
from gateway.config.events import Cookie
from gateway.config.links import RedirectRoute
from gateway.config.middleware import BasicAuth, CIDRs, Compress, ForwardAuth, HeaderRules
from gateway.config.paths import ca_file_issue
from gateway.config.proxy import Proxy
from gateway.config.static import Static

if TYPE_CHECKING:
    from gateway.config.root import Config


class Match(_Model):
    """Which requests a route takes: any of ``hosts`` (empty: any) and a path prefix."""

    hosts: tuple[str, ...] = ()
    path_prefix: str = "/"

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, host in enumerate(value):
            if not _HOST_PATTERN.match(host):
                raise ValueError(
                    f"[{i}] {host!r} is not a lowercase host name or '*.domain' wildcard"
                )
        return value

    @field_validator("path_prefix")
    @classmethod
    def _path_prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('must start with "/"')
        if any(c in value for c in "?#\\") or any(ord(c) < 0x21 for c in value):
            raise ValueError("must be a plain path: no query, fragment, space or control character")
        return value


class Respond(_Model):
    """A fixed response from memory: health pages, maintenance pages, hello world."""

    status: Annotated[int, Field(ge=200, le=599)] = 200
    body: str = ""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = Field(default_factory=dict)

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        if any(c in value for c in "\r\n\0"):
            raise ValueError("must not contain CR, LF or NUL")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for name, header_value in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if any(c in header_value for c in "\r\n\0"):
                raise ValueError(f"{name!r} value must not contain CR, LF or NUL")
        return value


class Collect(_Model):
    """The tracker endpoints under the route's prefix: tr/v1, str/v1, img/v1 and the
    WebSocket tr/v1/ws."""

    endpoints: tuple[Literal["tr", "str", "img", "ws"], ...] = ("tr", "str", "img", "ws")
    ws_max_frame_bytes: Annotated[int, Field(ge=256, le=16 << 20)] = 64 << 10
    ws_frames_per_second: Annotated[int, Field(ge=1, le=100_000)] = 100


class Segment(_Model):
    """The Segment HTTP API under the route's prefix: /v1/track, /v1/batch, ..., and the
    settings analytics.js loads (/v1/projects/<writeKey>/settings)."""

    enabled: bool = True
    # More destinations' settings handed to analytics.js beside Segment.io's own.
    integrations: Mapping[str, dict[str, Any]] = Field(default_factory=dict)


class IntakeUser(_Model):
    username: Annotated[str, Field(min_length=1)]
    password: Annotated[str, Field(min_length=8)]


class Intake(_Model):
    """Rill's intake protocol: already-formed events, NDJSON, HTTP Basic auth."""

    users: Annotated[tuple[IntakeUser, ...], Field(min_length=1)]
    max_line_bytes: Annotated[int, Field(ge=1024, le=16 << 20)] = 64 << 10


# What a custom Snowplow path (the collector's "paths" setting) may stand for.
SNOWPLOW_TP2 = "/com.snowplowanalytics.snowplow/tp2"
_VENDOR_PATH = re.compile(r"/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+")


class Snowplow(_Model):
    """Snowplow's tracker protocol under the route's prefix: ``GET /i``, ``/ice.png`` and
    ``/{vendor}/{version}``, ``POST /com.snowplowanalytics.snowplow/tp2``."""

    # The collector's network user id, first-party, with tracking.cookies' attributes.
    cookie: Cookie = Cookie(name="sp", max_age=365 * 86400)
    # Custom vendor paths, e.g. {"/com.acme/track": "/com.snowplowanalytics.snowplow/tp2"}.
    paths: Mapping[str, Literal["/i", "/com.snowplowanalytics.snowplow/tp2"]] = Field(
        default_factory=dict
    )
    max_events: Annotated[int, Field(ge=1, le=100_000)] = 1000

    @field_validator("paths")
    @classmethod
    def _paths(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for path in value:
            if not _VENDOR_PATH.fullmatch(path):
                raise ValueError(f"{path!r} is not a path like /com.acme/track")
        return value


# The keys that give a route its handler, one of which each route has: the registry of
# handler kinds (gateway.handlers.kinds) builds and describes each.
HANDLER_KINDS = (
    "respond", "collect", "segment", "proxy", "static", "redirect", "intake", "snowplow",
)  # fmt: skip


class Route(_Model):
    """One entry of the ordered route table: a match and exactly one handler."""

    name: Name
    match: Match = Match()
    max_body_bytes: Annotated[int, Field(ge=0, le=1 << 40)] | None = None
    rate_limits: tuple[str, ...] = ()
    rate_limit_mode: Literal["reject", "flag"] = "reject"
    track: bool = False
    delivery: Literal["durable", "fast"] | None = None
    respond: Respond | None = None
    collect: Collect | None = None
    segment: Segment | None = None
    proxy: Proxy | None = None
    static: Static | None = None
    redirect: RedirectRoute | None = None
    intake: Intake | None = None
    snowplow: Snowplow | None = None
    # Middleware, applied in this order: ip_deny/ip_allow, rate limits, basic_auth,
    # forward_auth, then the handler with headers and compress around it.
    ip_allow: CIDRs = ()
    ip_deny: CIDRs = ()
    basic_auth: BasicAuth | None = None
    forward_auth: ForwardAuth | None = None
    headers: HeaderRules | None = None
    compress: Compress | None = None
    cache: RouteCache | None = None  # proxy routes: the shared HTTP cache (gateway.cache)


def checks(config: Config) -> Iterator[ConfigIssue]:
    """Route names, one handler each, and what each route needs from the rest."""
    rule_names = {rule.name: i for i, rule in enumerate(config.rate_limits.rules)}
    route_names: dict[str, int] = {}
    for i, route in enumerate(config.routes):
        path = f"routes[{i}]"
        if route.name in route_names:
            yield ConfigIssue(
                f"{path}.name",
                f"duplicate route name {route.name!r} (also routes[{route_names[route.name]}])",
            )
        route_names.setdefault(route.name, i)
        handlers = [h for h in HANDLER_KINDS if getattr(route, h) is not None]
        if len(handlers) != 1:
            yield ConfigIssue(
                path,
                f"needs exactly one handler: one of {', '.join(HANDLER_KINDS)}",
            )
        if route.redirect is not None and config.redirects is None:
            yield ConfigIssue(f"{path}.redirect", "needs a top-level redirects section")
        if route.static is not None and not os.path.isdir(route.static.root):
            yield ConfigIssue(f"{path}.static.root", f"{route.static.root!r} is not a directory")
        proxy = route.proxy
        if proxy is not None and proxy.ca_file and (problem := ca_file_issue(proxy.ca_file)):
            yield ConfigIssue(f"{path}.proxy.ca_file", problem)
        if proxy is not None and proxy.policy == "header_hash" and not proxy.hash_header:
            yield ConfigIssue(f"{path}.proxy.hash_header", "is required by policy header_hash")
        if route.segment is not None and route.segment.enabled and not config.tracking.write_keys:
            yield ConfigIssue(f"{path}.segment", "needs tracking.write_keys to check callers")
        if route.proxy is None:
            if route.headers is not None and route.headers.request.names():
                yield ConfigIssue(f"{path}.headers.request", "applies to proxy routes only")
            if route.forward_auth is not None and route.forward_auth.copy_headers:
                yield ConfigIssue(
                    f"{path}.forward_auth.copy_headers", "applies to proxy routes only"
                )
        if route.compress is not None and route.proxy is None and route.respond is None:
            yield ConfigIssue(f"{path}.compress", "applies to proxy and respond routes")
        for j, rule_name in enumerate(route.rate_limits):
            if rule_name not in rule_names:
                known = ", ".join(rule_names) or "none defined in rate_limits.rules"
                yield ConfigIssue(
                    f"{path}.rate_limits[{j}]", f"unknown rule {rule_name!r} (known: {known})"
                )
        if route.match.path_prefix.startswith(config.server.builtin_prefix):
            yield ConfigIssue(
                f"{path}.match.path_prefix",
                f"is inside server.builtin_prefix {config.server.builtin_prefix!r}",
            )
