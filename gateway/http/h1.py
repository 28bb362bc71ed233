"""aiohttp's low-level HTTP server, with the edge limits it lacks.

aiohttp parses HTTP; this module only adds what an edge needs around it: a cap on open
connections per worker, a deadline for the first request head (slow-loris), a watch on
request bodies that stall or trickle (408), 431 for oversized heads instead of a generic
400, quiet logging of malformed requests, and a hook that sees every answered request
(metrics, access log).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from gateway.config import Server as ServerConfig
from gateway.http.negotiate import Negotiating
from gateway.request.errors import BodyTimeout

log = logging.getLogger("gateway.http")

Observer = Callable[[web.BaseRequest, web.StreamResponse, float], None]


class ServerHooks(Protocol):
    """What the server reports to its owner."""

    def observe(
        self, request: web.BaseRequest, response: web.StreamResponse, elapsed: float
    ) -> None:
        """Called once a response is written (or the client is gone)."""

    def opened(self, delta: int) -> None:
        """A connection opened (+1) or closed (-1)."""

    def refused(self) -> None:
        """A connection was refused at the connection cap."""

    def h2(self, event: str, reason: str = "") -> None:
        """An HTTP/2 connection's event (see ``gateway.http.h2.H2Hooks``)."""


BUSY_LINGER = 1.0  # seconds a refused connection is kept to read what the client sent

# Sent, then the socket closed, when a worker is at its connection cap. A constant: no
# request has been read, so there is nothing to parse or negotiate.
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 37\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"503 Service Unavailable: too busy\r\n\r\n"
)


class _BusyProtocol(asyncio.Protocol):
    """Answers 503 and hangs up. Closing a socket whose request is still unread makes
    the kernel send a reset, which can destroy the answer before the client reads it:
    so the write side is shut after the answer (FIN), what the client sends is read and
    dropped, and the socket is closed when the client closes or after ``BUSY_LINGER``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio's classes.
        self._transport = writer = cast(asyncio.WriteTransport, transport)
        writer.write(_BUSY_RESPONSE)
        writer.write_eof()
        self._linger = asyncio.get_running_loop().call_later(BUSY_LINGER, writer.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self._transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._linger.cancel()


def _is_oversized_head(exc: BaseException | None) -> bool:
    if isinstance(exc, LineTooLong):
        return True
    return isinstance(exc, BadHttpMessage) and "too many headers" in str(exc).lower()


class GatewayProtocol(RequestHandler):
    """One client connection."""

    __slots__ = (
        "_body",
        "_body_check",
        "_body_seen",
        "_head_deadline",
        "_min_body_rate",
        "_read_body_timeout",
        "_read_header_timeout",
        "_server",
        "input_pending",
    )

    def __init__(
        self,
        manager: GatewayServer,
        *,
        read_header_timeout: float,
        read_body_timeout: float = 10.0,
        min_body_rate: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._read_header_timeout = read_header_timeout
        self._read_body_timeout = read_body_timeout
        self._min_body_rate = min_body_rate
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None
        self._body_seen = 0
        self._body_check: asyncio.TimerHandle | None = None
        self._server = manager
        # Bytes came since the last request began: the connection is not idle, whatever
        # aiohttp's parser has made of them so far (a drain answers them).
        self.input_pending = False

    @property
    def awaiting_request(self) -> bool:
        """A request has begun to arrive, or none has come yet on a new connection: not
        an idle keep-alive connection, whose client expects it may be closed."""
        return self.input_pending or self._request_count == 0

    @property
    def draining(self) -> bool:
        """The worker is stopping: answers say Connection: close."""
        return self._server.draining

    def watch_body(self, body: StreamReader) -> None:
        """From its head on, until it is all in: every ``read_body`` seconds the body must
        have brought at least one byte, and ``min_body_rate`` bytes a second, or its
        reader raises :class:`BodyTimeout` (fault run F4: a byte every 5 s held a request
        slot forever). A window in which the gateway itself paused reading (its consumer,
        say an upstream, is slower than the client) does not count against the client."""
        self.unwatch_body()  # a pipelined request's body follows the one before
        if body.is_eof():
            return
        self._body, self._body_seen = body, body.total_bytes
        self._body_check = self._loop.call_later(self._read_body_timeout, self._check_body)

    def unwatch_body(self) -> None:
        self._body = None
        if self._body_check is not None:
            self._body_check.cancel()
            self._body_check = None

    def _check_body(self) -> None:
        self._body_check = None
        body = self._body
        if body is None or body.is_eof():
            return
        window = self._read_body_timeout
        arrived = body.total_bytes - self._body_seen
        if self._reading_paused or arrived >= max(1, self._min_body_rate * window):
            self._body_seen = body.total_bytes
            self._body_check = self._loop.call_later(window, self._check_body)
            return
        self._body = None
        detail = (
            f"request body stalled: no byte in {window:g} s"
            if not arrived
            else f"request body slower than {self._min_body_rate} bytes/s"
        )
        body.set_exception(BodyTimeout(detail))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # aiohttp's keep-alive timer bounds later idle periods; the first request head
        # gets its own, shorter deadline so a connection that trickles bytes is cut.
        self._head_deadline = self._loop.call_later(self._read_header_timeout, self._head_due)

    def _head_due(self) -> None:
        self._head_deadline = None
        if self._request_count == 0:
            self.force_close()

    def data_received(self, data: bytes) -> None:
        if not self._request_in_progress:
            self.input_pending = True
        if self._close and not self._force_close and self._request_in_progress:
            # A graceful shutdown sets _close, after which aiohttp drops incoming bytes;
            # an upload still arriving would then stall until the drain timeout cut it.
            # Let the in-flight request's body through; nothing after it is served.
            self._close = False
            try:
                super().data_received(data)
            finally:
                self._close = True
            return
        super().data_received(data)

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp's signature
        # aiohttp's shutdown force-closes first, which stops reading a request body that
        # is still arriving, then waits for a handler that can no longer finish. Wait for
        # the in-flight request with the connection still readable, then let aiohttp close.
        if self.awaiting_request and not self._request_in_progress and timeout:
            # A request sent just before the stop (issue 27, D8), or a connection the
            # client has not written on yet (Go's Shutdown gives those 5 s; here their
            # head deadline): let the request be read and answered, with Connection:
            # close, as an in-flight one is.
            timeout = await self._wait_for_handler(timeout)
        if self._request_in_progress and timeout:
            self._close = True  # no further request on this connection
            timeout = await self._wait_for_handler(timeout)
        await super().shutdown(timeout)

    async def _wait_for_handler(self, limit: float) -> float:
        """Until the request's handler is done (or the connection lost), at most
        ``limit`` seconds; the time left, never 0 (aiohttp reads 0 as "no limit")."""
        loop = self._loop
        started = loop.time()
        self._handler_waiter = loop.create_future()
        try:
            async with asyncio.timeout(limit):
                await self._handler_waiter
        except TimeoutError:
            pass
        finally:
            self._handler_waiter = None
        return max(0.001, limit - (loop.time() - started))

    def connection_lost(self, exc: BaseException | None) -> None:
        waiter = self._handler_waiter
        if waiter is not None and not waiter.done() and not self._request_in_progress:
            waiter.set_result(None)  # shutdown() waits for a request that will never come
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None
        self.unwatch_body()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 400 and _is_oversized_head(exc):
            # RFC 6585 §5: the head is too large, which a client can fix, unlike a bad one.
            return super().handle_error(request, 431, exc, "431 Request Header Fields Too Large")
        return super().handle_error(request, status, exc, message)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # Reached for malformed requests; a hostile client must not be able to flood the
        # log with tracebacks. Unexpected handler errors are logged by the gateway itself.
        peer = self.transport.get_extra_info("peername") if self.transport else None
        log.info("request from %s failed: %r", peer, kwargs.get("exc_info"))


class GatewayServer(web.Server):
    """Protocol factory for one listener: counts connections and refuses past the cap."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        settings: Callable[[], ServerConfig],
        hooks: ServerHooks,
        http2: Literal["alpn", "prior_knowledge"] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, access_log_class=_observer_class(hooks.observe), **kwargs)
        self._settings = settings
        self._hooks = hooks
        # How a connection may become HTTP/2 on this listener (gateway.http.negotiate).
        self._http2 = http2
        if http2 is not None:  # h2 is imported only where a listener offers it
            from gateway.http.h2 import H2Protocol
            from gateway.http.h2state import refusals_log

            self._h2_protocol = H2Protocol
            self.h2_refusals = refusals_log()
        self.open_connections = 0
        # Set when the worker starts stopping, before the listeners close: every answer
        # from then on says Connection: close.
        self.draining = False

    def __call__(self) -> RequestHandler:
        # Read per connection so a config reload applies to new connections.
        settings = self._settings()
        if self.open_connections >= settings.limits.max_connections:
            self._hooks.refused()
            return _BusyProtocol()  # type: ignore[return-value]
        if self._http2 is None:
            return self._http1(settings)
        return Negotiating(  # type: ignore[return-value]
            lambda: self._http1(settings),
            lambda: self._h2_protocol(
                self,
                settings,
                handler=self.request_handler,
                factory=self.request_factory,
                hooks=self._hooks,
            ),
            prior_knowledge=self._http2 == "prior_knowledge",
            first_bytes_timeout=settings.timeouts.read_header,
        )

    def _http1(self, settings: ServerConfig) -> GatewayProtocol:
        return GatewayProtocol(
            self,
            loop=self._loop,
            keepalive_timeout=settings.timeouts.keepalive,
            read_header_timeout=settings.timeouts.read_header,
            read_body_timeout=settings.timeouts.read_body,
            min_body_rate=settings.limits.min_body_rate,
            **self._kwargs,
        )

    def pre_shutdown(self) -> None:
        # aiohttp closes every connection with no request in progress; one awaiting its
        # request is left to its own shutdown, which answers it.
        for conn in self._connections:
            if not (isinstance(conn, GatewayProtocol) and conn.awaiting_request):
                conn.close()

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.open_connections += 1
        self._hooks.opened(+1)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.open_connections -= 1
        self._hooks.opened(-1)


def _observer_class(observer: Observer) -> type[AbstractAccessLogger]:
    """aiohttp calls its access logger after each response is written: the one place
    that knows the final status, body size and duration. We use it as a hook."""

    class RequestObserver(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            try:
                observer(request, response, time)
            except Exception:
                # Bookkeeping must never break the connection that was already answered.
                log.exception("request observer failed")

    return RequestObserver
