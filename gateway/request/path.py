"""The request path: built-in endpoints, route lookup, the route's handler, error pages.

Every request gets a :class:`RequestInfo` (id, route, client address) that the handler
and, after the response is written, the metrics and access log read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from itertools import count
from time import perf_counter

from aiohttp import web

from gateway.config import Listener
from gateway.events.sink import EventsRefused
from gateway.handlers.builtin import Builtins
from gateway.limits.ratelimit import KeyContext, Refusal
from gateway.middleware.trace import Trace, start_trace
from gateway.observability.accesslog import AccessLog, AccessRecord, redact
from gateway.observability.metrics import Metrics
from gateway.request.clientip import parse_ip
from gateway.request.errors import REQUEST_ID_HEADER, HTTPError, error_response
from gateway.request.info import INFO, REFUSED, RequestInfo
from gateway.request.router import normalize_host
from gateway.request.runtime import Runtime, RuntimeHolder
from gateway.tls.storage import TOKEN, Storage

log = logging.getLogger("gateway")

NO_ROUTE = "_none"
BUILTIN_ROUTE = "_gateway"
ACME_ROUTE = "_acme"
INVALID_ROUTE = "_invalid"  # the request could not be parsed, so never reached routing
CLIENT_CLOSED = 499  # nginx's status for a request the client abandoned


class RequestIds:
    """Unique per process and cheap: a random prefix per process and a counter."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(5).hex()
        self._counter = count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"


class Gateway:
    """Answers requests for all listeners of one worker process."""

    def __init__(
        self,
        holder: RuntimeHolder,
        builtins: Builtins,
        metrics: Metrics,
        access_log: AccessLog | None,
    ) -> None:
        self.holder = holder
        self._builtins = builtins
        self._metrics = metrics
        self._access_log = access_log
        self._ids = RequestIds()
        self._in_flight = 0

    def handler_for(
        self, listener: Listener
    ) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        if listener.redirect_to_https is not None:
            return _HttpsRedirect(self, listener.redirect_to_https)
        return _ListenerHandler(self, listener.admin)

    async def handle(self, request: web.BaseRequest, admin: bool) -> web.StreamResponse:
        runtime = self.holder.current
        server = runtime.config.server
        info = RequestInfo(
            request_id=self._ids.next(),
            route=NO_ROUTE,
            client_ip=runtime.client_ip.resolve(
                request.remote, request.headers, _forwarded(request, server.client_ip_header)
            ),
            start=perf_counter(),
        )
        if server.trace_context.enabled:
            info.trace = _trace(request, runtime, server.trace_context.accept)
        request[INFO] = info
        path = request.path
        try:
            if REFUSED in request:
                refusal = request[REFUSED]
                response = error_response(refusal.status, refusal.reason, info.request_id)
                response.force_close()
                return response
            if path.startswith(server.builtin_prefix):
                info.route = BUILTIN_ROUTE
                return await self._builtins.handle(
                    request,
                    path[len(server.builtin_prefix) :],
                    admin=admin,
                    public_metrics=server.public_metrics,
                )
            if self._in_flight >= server.limits.max_concurrent_requests:
                self._metrics.overload_rejected.inc()
                raise HTTPError(503, "too many requests in progress", {"Retry-After": "1"})
            self._in_flight += 1
            try:
                return await self._route(request, runtime, info)
            except asyncio.CancelledError:
                # aiohttp cancels the handler when the client hangs up: record it the way
                # nginx does, as 499, since no response will be written or logged.
                self.observe(request, web.StreamResponse(status=CLIENT_CLOSED), 0.0)
                raise
            finally:
                # Released on every path out: response, error, or the client going away.
                self._in_flight -= 1
        except HTTPError as exc:
            response = error_response(exc.status, exc.detail, info.request_id, exc.headers)
        except EventsRefused as exc:  # every ingestion handler's refusals, answered here
            response = error_response(exc.status, exc.reason, info.request_id, exc.headers)
        except Exception:
            log.exception("internal error, request_id=%s route=%s", info.request_id, info.route)
            response = error_response(
                500, f"internal error, request id {info.request_id}", info.request_id
            )
        if info.cors is not None:  # a browser must be able to read why it was refused
            info.cors.decorate(request, response)
        return response

    async def _route(
        self, request: web.BaseRequest, runtime: Runtime, info: RequestInfo
    ) -> web.StreamResponse:
        path = request.path
        if "/." in path and any(seg in (".", "..") for seg in path.split("/")):
            # aiohttp decodes %2e%2e but does not resolve it: "/x/%2e%2e/admin" would match
            # "/" rather than an "/admin" route, and an upstream would resolve it itself.
            raise HTTPError(400, "dot segments are not allowed in paths")
        if runtime.acme_storage is not None and path.startswith(ACME_CHALLENGE):
            info.route = ACME_ROUTE
            return await _acme_answer(request, runtime.acme_storage, path)
        route = runtime.router.match(normalize_host(request.host), path)
        if route is None:
            raise HTTPError(404, "no route for this host and path")
        info.route = route.name
        info.track = route.track
        info.cors = route.cors
        middleware = info.middleware = route.middleware
        if middleware is not None:
            middleware.admit(info)
        length = request.content_length
        if length is not None and length > route.max_body:
            # Answer before reading a byte of a body we will refuse (RFC 9110 §15.5.14).
            raise HTTPError(413, f"request body is larger than {route.max_body} bytes")
        if route.limits is not None:
            ctx = KeyContext(info.client_ip, route.name, request.headers.get)
            refusal = await route.limits.check(ctx)
            if refusal is not None:
                rule, details = refusal
                if route.limits.flag_only:
                    info.rate_limited = rule
                else:
                    raise HTTPError(
                        429, f"rate limit {rule!r} exceeded", rate_limit_headers(details)
                    )
        if middleware is None:
            return await route.handler(request, route.max_body)
        answer = await middleware.authenticate(request, info)
        if answer is not None:
            return answer
        response = await route.handler(request, route.max_body)
        if middleware.compress is not None:
            middleware.compress_whole(request, response)
        return response

    def observe(
        self, request: web.BaseRequest, response: web.StreamResponse, elapsed: float
    ) -> None:
        """After the response is written: metrics, then the access log line."""
        info = request.get(INFO)
        route = info.route if info is not None else INVALID_ROUTE
        if info is not None:
            elapsed = perf_counter() - info.start
        self._metrics.observe_request(route, request.method, response.status, elapsed)
        if info is not None and info.track:
            self._track(request, response, info, elapsed)
        access = self.holder.current.config.server.access_log
        if self._access_log is None or not access.enabled:
            return
        self._access_log.write(
            AccessRecord(
                remote_ip=request.remote or "",
                client_ip=info.client_ip if info is not None else request.remote or "",
                method=request.method,
                host=request.host,
                uri=request.raw_path,
                proto=f"HTTP/{request.version.major}.{request.version.minor}",
                status=response.status,
                size=response.content_length
                if response.content_length is not None
                else response.body_length,
                bytes_sent=response.body_length,
                duration=elapsed,
                route=route,
                request_id=info.request_id
                if info is not None
                else response.headers.get(REQUEST_ID_HEADER, ""),
                user_agent=request.headers.get("User-Agent", ""),
                headers=redact(request.headers) if access.headers else None,
                rate_limited=info.rate_limited if info is not None else None,
                trace_id=info.trace.trace_id if info is not None and info.trace else None,
                user=info.user if info is not None else None,
            )
        )

    def _track(
        self,
        request: web.BaseRequest,
        response: web.StreamResponse,
        info: RequestInfo,
        elapsed: float,
    ) -> None:
        """A ``request`` event for a ``track`` route, after the response went out."""
        runtime = self.holder.current
        tracker = runtime.tracker
        event = tracker.event(
            request, info.client_ip, tracker.identify(request, mint=False),
            event_type="request", status=response.status, duration_ms=round(elapsed * 1000, 3),
        )  # fmt: skip
        runtime.sink.offer(event)  # a loss is counted by the pipeline


def _trace(request: web.BaseRequest, runtime: Runtime, accept: str) -> Trace:
    """The request's trace: the caller's, when ``accept`` believes it, else a new one."""
    headers = request.headers
    traceparent = headers.get("traceparent") if accept != "none" else None
    if traceparent is not None and accept == "trusted":
        peer = parse_ip(request.remote or "")
        if peer is None or not runtime.client_ip.is_trusted(peer):
            traceparent = None
    return start_trace(traceparent, headers.get("tracestate"))


def rate_limit_headers(refusal: Refusal) -> dict[str, str]:
    """Retry-After (RFC 9110 §10.2.3) and the IETF draft's RateLimit-* fields."""
    return {
        "Retry-After": str(refusal.retry_after),
        "RateLimit-Limit": str(refusal.limit),
        "RateLimit-Remaining": str(refusal.remaining),
        "RateLimit-Reset": str(refusal.reset),
    }


def _forwarded(request: web.BaseRequest, header: str) -> Sequence[Mapping[str, str]]:
    # Parsing Forwarded costs; only the "forwarded" mode needs it.
    return request.forwarded if header == "forwarded" else ()


ACME_CHALLENGE = "/.well-known/acme-challenge/"


async def _acme_answer(request: web.BaseRequest, storage: Storage, path: str) -> web.Response:
    """HTTP-01 (RFC 8555 §8.3): the key authorization published for this token by the
    process that is ordering, whichever worker the CA's request reached."""
    if request.method not in ("GET", "HEAD"):
        raise HTTPError(405, "method not allowed", {"Allow": "GET, HEAD"})
    token = path[len(ACME_CHALLENGE) :]
    answer = None
    if TOKEN.fullmatch(token):  # anything else is not a token: no file lookup
        answer = await asyncio.get_running_loop().run_in_executor(None, storage.read_http, token)
    if answer is None:
        raise HTTPError(404, "no such ACME challenge")
    return web.Response(
        body=answer, content_type="text/plain", headers={"Cache-Control": "no-store"}
    )


_REDIRECT_HOST = re.compile(r"^[a-z0-9.-]+$|^\[[0-9a-f:.]+\]$")


class _HttpsRedirect:
    """A plain-HTTP listener that sends everything to HTTPS with 308 (RFC 9110 §15.4.9,
    method and body kept), except ACME HTTP-01 challenges and the built-in endpoints."""

    __slots__ = ("_gateway", "_port")

    def __init__(self, gateway: Gateway, port: int) -> None:
        self._gateway = gateway
        self._port = port

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        prefix = self._gateway.holder.current.config.server.builtin_prefix
        if path.startswith((ACME_CHALLENGE, prefix)):
            return await self._gateway.handle(request, False)
        host = normalize_host(request.host)
        if not _REDIRECT_HOST.match(host):
            return error_response(400, "a valid Host header is required", "-")
        port = "" if self._port == 443 else f":{self._port}"
        location = f"https://{host}{port}{request.raw_path}"
        return web.Response(status=308, headers={"Location": location})


class _ListenerHandler:
    __slots__ = ("_admin", "_gateway")

    def __init__(self, gateway: Gateway, admin: bool) -> None:
        self._gateway = gateway
        self._admin = admin

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        return await self._gateway.handle(request, self._admin)
