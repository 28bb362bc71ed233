"""``server``: listeners, workers, timeouts, limits, proxy trust, the access log."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    Field,
    field_validator,
)

from gateway.config.base import (
    ConfigIssue,
    Name,
    _check_cidrs,
    _Model,
)
from gateway.config.paths import writable_file_issue

if TYPE_CHECKING:
    from gateway.config.root import Config


class Listener(_Model):
    """A plain-HTTP listening socket. ``admin`` listeners also serve reload and metrics."""

    name: Name
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)]
    admin: bool = False
    tls: bool = False
    redirect_to_https: Annotated[int, Field(ge=1, le=65535)] | None = None
    # HTTP/2 with prior knowledge on a plain listener, for a load balancer that speaks
    # h2c. (Over TLS, HTTP/2 is negotiated by ALPN: tls.http2.)
    h2c: bool = False

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address such as 127.0.0.1, 0.0.0.0 or ::") from None
        return value

    @property
    def is_loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback


class Timeouts(_Model):
    """Connection timeouts in seconds; together they bound a slow-loris client."""

    read_header: Annotated[float, Field(gt=0, le=3600)] = 10.0
    keepalive: Annotated[float, Field(gt=0, le=3600)] = 75.0
    read_body: Annotated[float, Field(gt=0, le=3600)] = 10.0


class Limits(_Model):
    """Per-request and per-worker limits with safe defaults."""

    max_header_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 8190
    max_headers: Annotated[int, Field(ge=8, le=1000)] = 100
    max_body_bytes: Annotated[int, Field(ge=0, le=1 << 40)] = 1 << 20
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    max_concurrent_requests: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    min_body_rate: Annotated[int, Field(ge=0, le=1 << 30)] = 240


class Http2(_Model):
    """HTTP/2 connection limits (RFC 9113 §6.5.2 settings, and the defences around them)."""

    max_concurrent_streams: Annotated[int, Field(ge=1, le=10_000)] = 100
    max_header_list_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 65536
    header_table_bytes: Annotated[int, Field(ge=0, le=1 << 16)] = 4096
    max_frame_bytes: Annotated[int, Field(ge=16384, le=(1 << 24) - 1)] = 16384
    stream_window_bytes: Annotated[int, Field(ge=65535, le=(1 << 31) - 1)] = 256 << 10
    connection_window_bytes: Annotated[int, Field(ge=65535, le=(1 << 31) - 1)] = 1 << 20
    # Past these in any second: GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487;
    # SETTINGS and PING floods).
    max_resets_per_second: Annotated[int, Field(ge=1, le=100_000)] = 100
    max_control_frames_per_second: Annotated[int, Field(ge=1, le=100_000)] = 100
    # Frames queued for a client that does not read, before the connection is cut.
    max_write_buffer_bytes: Annotated[int, Field(ge=65536, le=1 << 30)] = 4 << 20


class AccessLog(_Model):
    """JSON access log, one line per request."""

    enabled: bool = True
    path: str = "-"
    headers: bool = False


class TraceContext(_Model):
    """W3C Trace Context: every request in a trace, its id in logs, events and upstreams."""

    enabled: bool = True
    # Whose traceparent starts the request's trace: anyone's, only a trusted proxy's
    # (server.trusted_proxies), or nobody's (the gateway starts every trace).
    accept: Literal["any", "trusted", "none"] = "any"


class Server(_Model):
    """Listeners, worker processes, timeouts, limits and proxy trust."""

    listeners: Annotated[tuple[Listener, ...], Field(min_length=1)]
    workers: Annotated[int, Field(ge=1, le=256)] | None = None
    shutdown_timeout: Annotated[float, Field(ge=0, le=3600)] = 15.0
    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    http2: Http2 = Http2()
    trusted_proxies: tuple[str, ...] = ()
    client_ip_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    builtin_prefix: str = "/_gateway/"
    public_metrics: bool = False
    access_log: AccessLog = AccessLog()
    trace_context: TraceContext = TraceContext()

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_cidrs(value)

    @field_validator("builtin_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not (value.startswith("/") and value.endswith("/") and len(value) > 2):
            raise ValueError('must start and end with "/", e.g. "/_gateway/"')
        return value

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


def checks(config: Config) -> Iterator[ConfigIssue]:
    """Listener names and addresses, and where the access log goes."""
    seen_names: dict[str, int] = {}
    seen_addresses: dict[tuple[str, int], int] = {}
    for i, listener in enumerate(config.server.listeners):
        path = f"server.listeners[{i}]"
        if listener.name in seen_names:
            yield ConfigIssue(
                f"{path}.name",
                f"duplicate listener name {listener.name!r} "
                f"(also server.listeners[{seen_names[listener.name]}])",
            )
        seen_names.setdefault(listener.name, i)
        address = (listener.host, listener.port)
        if listener.port and address in seen_addresses:
            yield ConfigIssue(
                f"{path}.port",
                f"{listener.host}:{listener.port} is already used by "
                f"server.listeners[{seen_addresses[address]}]",
            )
        seen_addresses.setdefault(address, i)
        if listener.tls and config.tls is None:
            yield ConfigIssue(f"{path}.tls", "needs a top-level tls section with certificates")
        if listener.h2c and listener.tls:
            yield ConfigIssue(f"{path}.h2c", "is for plain listeners: over TLS, see tls.http2")
        if listener.admin and not listener.is_loopback:
            yield ConfigIssue(f"{path}.host", "an admin listener must bind a loopback address")
    access_log = config.server.access_log.path
    if access_log != "-" and (problem := writable_file_issue(access_log)):
        yield ConfigIssue("server.access_log.path", problem)
