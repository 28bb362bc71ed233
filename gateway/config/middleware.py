"""Per-route middleware: header rules, basic and forward auth, IP allow/deny lists and
response compression (the vocabulary of Caddy's and Traefik's per-route handlers)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from gateway.config.base import _TOKEN, _check_cidrs, _Model

# What the gateway itself writes and a rule may never set or remove: the forwarding
# headers upstreams trust (X-Forwarded-*, Forwarded, Via), the framing, the trace context
# and the request id.
PROTECTED_REQUEST = frozenset({
    "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "via",
    "host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
    "traceparent", "tracestate", "x-request-id",
})  # fmt: skip
PROTECTED_RESPONSE = frozenset({
    "content-length", "transfer-encoding", "connection", "content-encoding", "x-request-id",
})  # fmt: skip
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
PLACEHOLDERS = frozenset({"client_ip", "request_id", "host", "trace_id"})


def _header_value(name: str, value: str) -> None:
    if not _TOKEN.match(name):
        raise ValueError(f"{name!r} is not a valid header name")
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name!r}: the value must not contain CR, LF or NUL")
    for found in PLACEHOLDER.findall(value):
        if found not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS))
            raise ValueError(f"{name!r}: unknown placeholder {{{found}}} (known: {known})")


class HeaderOps(_Model):
    """``set`` replaces, ``add`` appends another line, ``remove`` deletes (names, any case)."""

    set: Mapping[str, str] = Field(default_factory=dict)
    add: Mapping[str, str] = Field(default_factory=dict)
    remove: tuple[str, ...] = ()

    @field_validator("set", "add")
    @classmethod
    def _values(cls, value: Mapping[str, str]) -> Mapping[str, str]:
        for name, header_value in value.items():
            _header_value(name, header_value)
        return value

    @field_validator("remove")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for i, name in enumerate(value):
            if not _TOKEN.match(name):
                raise ValueError(f"[{i}] {name!r} is not a valid header name")
        return value

    def names(self) -> frozenset[str]:
        return frozenset(name.lower() for name in (*self.set, *self.add, *self.remove))


def _protected(ops: HeaderOps, protected: frozenset[str]) -> HeaderOps:
    if forged := sorted(ops.names() & protected):
        raise ValueError(f"{', '.join(forged)}: set by the gateway itself, not by rules")
    return ops


class HeaderRules(_Model):
    """``request``: what the upstream receives (proxy routes); ``response``: what the
    client receives, on every answer of the route, errors included."""

    request: Annotated[HeaderOps, AfterValidator(lambda o: _protected(o, PROTECTED_REQUEST))] = (
        HeaderOps()
    )
    response: Annotated[HeaderOps, AfterValidator(lambda o: _protected(o, PROTECTED_RESPONSE))] = (
        HeaderOps()
    )


_BCRYPT = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")


class BasicAuthUser(_Model):
    username: Annotated[str, Field(min_length=1, max_length=256)]
    # A bcrypt hash ("$2b$12$..."), e.g. from `gateway hash-password` or htpasswd -B.
    password_hash: str

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if ":" in value or any(ord(c) < 0x20 for c in value):
            raise ValueError("must not contain ':' or control characters")
        return value

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        if not _BCRYPT.match(value):
            raise ValueError("is not a bcrypt hash ($2b$<cost>$<53 characters>)")
        return value


class BasicAuth(_Model):
    """HTTP Basic authentication (RFC 7617) against bcrypt hashes."""

    realm: Annotated[str, Field(min_length=1, max_length=128, pattern=r'^[^"\\\r\n]+$')] = (
        "restricted"
    )
    users: Annotated[tuple[BasicAuthUser, ...], Field(min_length=1)]
    # A verified (user, password) pair is not checked with bcrypt again for this long.
    cache_seconds: Annotated[float, Field(ge=0, le=86400)] = 300.0
    # Wrong credentials from one client IP past this, per minute: 429 until it slows.
    failures_per_minute: Annotated[int, Field(ge=1, le=100_000)] = 10


_AUTH_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?(/[^\s?#]*)?$")


class ForwardAuth(_Model):
    """Ask an auth service first (Traefik's ForwardAuth, Caddy's forward_auth)."""

    url: str
    # Client headers sent to the auth service (besides X-Forwarded-*); None: all.
    request_headers: tuple[str, ...] | None = None
    # Auth service headers copied onto the request the upstream gets, on a 2xx.
    copy_headers: tuple[str, ...] = ()
    timeout: Annotated[float, Field(gt=0, le=60)] = 5.0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _AUTH_URL.match(value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL without a query")
        return value

    @field_validator("request_headers", "copy_headers")
    @classmethod
    def _names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for i, name in enumerate(value or ()):
            if not _TOKEN.match(name):
                raise ValueError(f"[{i}] {name!r} is not a valid header name")
        return value

    @field_validator("copy_headers")
    @classmethod
    def _copy(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if forged := sorted({n.lower() for n in value} & PROTECTED_REQUEST):
            raise ValueError(f"{', '.join(forged)}: set by the gateway itself")
        return value


COMPRESSIBLE = (
    "text/", "application/json", "application/javascript", "application/xml",
    "application/x-ndjson", "image/svg+xml", "+json", "+xml",
)  # fmt: skip


class Compress(_Model):
    """Compress answers for clients that accept it (``Accept-Encoding``)."""

    # The server's order of preference among what the client accepts at equal q.
    encodings: Annotated[tuple[Literal["zstd", "br", "gzip"], ...], Field(min_length=1)] = (
        "zstd",
        "br",
        "gzip",
    )
    min_bytes: Annotated[int, Field(ge=0, le=1 << 30)] = 1024
    # Content-Type prefixes (or "+json"-style suffixes) worth compressing.
    types: Annotated[tuple[str, ...], Field(min_length=1)] = COMPRESSIBLE


CIDRs = Annotated[tuple[str, ...], AfterValidator(_check_cidrs)]
