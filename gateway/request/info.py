"""Per-request facts shared by the request path, the handlers, metrics and the access log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from gateway.middleware.chain import RouteMiddleware
    from gateway.middleware.trace import Trace
    from gateway.request.cors import Cors


@dataclass(slots=True)
class RequestInfo:
    """Set when a request arrives; read by handlers and after the response is written."""

    request_id: str
    route: str
    client_ip: str
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds.
    start: float
    rate_limited: str | None = None  # the rule that flagged it, on a "flag" route
    track: bool = False  # copy the request to the event pipeline after the response
    cors: Cors | None = None  # the matched route's, for its error answers too
    trace: Trace | None = None  # W3C Trace Context, when server.trace_context is on
    middleware: RouteMiddleware | None = None  # the matched route's, for its answers too
    user: str | None = None  # who basic_auth let in
    # What forward_auth's service (and experiments) said to add to the upstream request.
    upstream_headers: list[tuple[str, str]] | None = None
    # Experiment assignments this request decided (name -> variant), for its events.
    experiments: dict[str, str] | None = None
    # Fields the response gets whatever handler makes it (experiments' Set-Cookie).
    response_fields: list[tuple[str, str]] | None = None


INFO = web.RequestKey("gateway.request.info", RequestInfo)


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer to a head the request path must not see; the connection closes after."""

    status: int
    reason: str


# Set by the protocol shell on a request whose head the request path must not see: the
# path answers with it and closes the connection (see gateway.http.head).
REFUSED = web.RequestKey("gateway.refused", Refusal)
