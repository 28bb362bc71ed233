"""The ``proxy`` handler: forward to an upstream target, stream the answer back.

Failure mapping: no healthy target → 503 with ``Retry-After``; upstream timeouts → 504;
refused, reset or garbage → 502. A failed attempt is retried on another target only
while no byte of the request body has been read from the client (so never a POST whose
body went out), within ``try_duration`` and ``max_tries``. Once the response head has
gone to the client, a failing upstream can only cut the client connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import HttpVersion11, web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.config import Proxy
from gateway.middleware.compress import Compressor
from gateway.proxy.answer import Answer, Hold, Sink
from gateway.proxy.balancer import Target
from gateway.proxy.group import UpstreamGroup
from gateway.proxy.headers import end_to_end, request_head, upstream_request_headers
from gateway.proxy.paths import ambiguous_path, rewritten
from gateway.proxy.upstream import UpstreamError
from gateway.proxy.websocket import bridge
from gateway.request.clientip import ClientIPResolver, parse_ip
from gateway.request.errors import HTTPError
from gateway.request.info import INFO
from gateway.request.response import UNTYPED, send_continue

if TYPE_CHECKING:
    from gateway.cache.machine import CacheMachine

CHUNK = 64 * 1024
_BUSY = {"Retry-After": "1"}


class _Attempt:
    """Per-request state shared across retries."""

    __slots__ = ("body_read",)

    def __init__(self) -> None:
        self.body_read = False  # a request body byte was taken from the client: no retry


class ProxyHandler:
    """Forwards matching requests to the route's upstream group."""

    def __init__(
        self,
        config: Proxy,
        prefix: str,
        group: UpstreamGroup,
        resolver: ClientIPResolver,
        cache: CacheMachine | None = None,
    ) -> None:
        self.config = config
        self.group = group
        self.cache = cache
        self._prefix = prefix.rstrip("/")
        self._resolver = resolver

    def upstream_target(self, raw_path: str) -> str:
        """The request target sent upstream (``gateway.proxy.paths.rewritten``)."""
        return rewritten(raw_path, self._prefix, self.config)

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        if self.config.strict_paths and (reason := ambiguous_path(request.raw_path)):
            raise HTTPError(400, f"{reason}: the upstream could read it as another path")
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        if request.content_length and not request.body_exists:
            raise HTTPError(400, "the request body disagrees with its content-length")
        if self.cache is not None:
            return await self.cache.handle(request, max_body, self)
        return await self.relay(request, await self.fetch(request, max_body))

    async def fetch(
        self,
        request: web.BaseRequest,
        max_body: int,
        adjust: Callable[[CIMultiDict[str]], None] | None = None,
    ) -> Answer:
        """The upstream's answer head, its body still to come: another target is tried
        while no request body byte was read, within ``try_duration`` and ``max_tries``.
        ``adjust`` edits the upstream request's fields (the cache's validators)."""
        attempt = _Attempt()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.try_duration
        tried: set[Target] = set()
        key = self._hash_key(request)
        last: UpstreamError | None = None
        for _ in range(self.config.max_tries):
            target = self.group.balancer.pick(key, frozenset(tried))
            if target is None:
                break
            tried.add(target)
            try:
                return await self._exchange(request, target, max_body, attempt, adjust)
            except UpstreamError as exc:
                self.group.failed(target)
                last = exc
                if attempt.body_read or loop.time() >= deadline:
                    break
        if last is None:
            raise HTTPError(503, "no healthy upstream", _BUSY)
        if last.timeout:
            raise HTTPError(504, f"upstream timed out: {last}")
        raise HTTPError(502, f"bad gateway: {last}")

    def _upstream_headers(self, request: web.BaseRequest, target: Target) -> CIMultiDict[str]:
        peer = request.remote or ""
        peer_ip = parse_ip(peer)
        config = self.config
        headers = upstream_request_headers(
            request.headers,
            peer=peer,
            peer_trusted=peer_ip is not None and self._resolver.is_trusted(peer_ip),
            scheme=request.scheme,
            host_override=config.host_header,
            forwarded=config.forwarded,
            via="1.1 edge-gateway" if config.via else None,
            target_host=target.authority,
        )
        info = request[INFO]
        if (trace := info.trace) is not None:
            headers["traceparent"] = trace.traceparent()
            if trace.state is not None:
                headers["tracestate"] = trace.state
            else:
                headers.popall("tracestate", None)
        middleware = info.middleware
        if middleware is not None and middleware.forward is not None:
            # Only the auth service's answer may carry these: never the client's.
            for name in middleware.forward.config.copy_headers:
                headers.popall(name, None)
        added = info.upstream_headers  # forward_auth's and experiments': never the client's
        if added:
            for name, _ in added:
                headers.popall(name, None)
            for name, value in added:
                headers.add(name, value)
        if middleware is not None and middleware.request_headers is not None:
            middleware.request_headers.apply(headers, middleware.facts(info, request.host))
        return headers

    def _answered(self, target: Target, status: int, sent: float) -> None:
        """The circuit breaker's view of an answer: 5xx, or slower than latency_ms, fails."""
        breaker = self.config.circuit_breaker
        if breaker is None:
            return
        waited = (asyncio.get_running_loop().time() - sent) * 1000
        slow = breaker.latency_ms is not None and waited > breaker.latency_ms
        self.group.outcome(target, status >= 500 or slow)

    @staticmethod
    def _compressor(request: web.BaseRequest) -> Compressor | None:
        middleware = request[INFO].middleware
        return middleware.compress if middleware is not None else None

    def _hash_key(self, request: web.BaseRequest) -> str | None:
        if self.config.policy == "ip_hash":
            return request[INFO].client_ip
        if self.config.policy == "header_hash" and self.config.hash_header:
            return request.headers.get(self.config.hash_header, "")
        return None

    async def _exchange(
        self,
        request: web.BaseRequest,
        target: Target,
        max_body: int,
        attempt: _Attempt,
        adjust: Callable[[CIMultiDict[str]], None] | None,
    ) -> Answer:
        """One try: the request and its body to ``target``, and the answer's head. The
        connection goes with the :class:`Answer` (released when its body is relayed)."""
        config = self.config
        pool = self.group.pools[target]
        conn, _ = await pool.acquire(config.timeouts.connect)
        target.in_flight += 1
        try:
            headers = self._upstream_headers(request, target)
            if adjust is not None:
                adjust(headers)
            length = request.content_length
            chunked = request.body_exists and length is None
            if length is not None:
                headers["Content-Length"] = str(length)
            elif chunked:
                headers["Transfer-Encoding"] = "chunked"
            await conn.send(
                request_head(request.method, self.upstream_target(request.raw_path), headers)
            )
            if request.body_exists:
                await self._send_body(request, conn.send, chunked, max_body, attempt)
            sent = asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(config.timeouts.first_byte):
                    status, upstream_headers = await conn.response_head()
            except TimeoutError:
                raise UpstreamError("no response head in time", timeout=True) from None
            self._answered(target, status, sent)
            if request.method == "HEAD":
                conn.finish_head_only()
            no_body = request.method == "HEAD" or status in (204, 304)
            whole = None if no_body else conn.complete_body()
        except BaseException as exc:
            if isinstance(exc, UpstreamError):
                exc.sent_body = attempt.body_read
            target.in_flight -= 1
            conn.close()
            pool.release(conn)
            raise
        return Answer(
            status, upstream_headers, whole, no_body,
            Hold(self.group, target, pool, conn),
        )  # fmt: skip

    async def relay(
        self,
        request: web.BaseRequest,
        answer: Answer,
        sink: Sink | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> web.StreamResponse:
        """Write ``answer`` to the client as its body arrives, with ``extra`` fields added
        (``sink`` sees every body byte too, and its end: the cache storing it), then
        release its connection."""
        hold = answer.hold
        completed = False
        try:
            if answer.whole is not None:
                # Already all here: one Response, so head and body leave in one write.
                hold.succeeded()
                completed = True
                if sink is not None:
                    sink.feed(answer.whole)
                    sink.done()
                response: web.StreamResponse = self.whole(
                    answer.status, answer.headers, answer.whole
                )
                for name, value in extra:
                    response.headers.add(name, value)
                return response
            streamed = await self._stream(request, answer, sink, extra)
            if streamed is not None:
                completed = True
                return streamed
            return web.StreamResponse(status=answer.status)  # cut: the client saw a short body
        finally:
            hold.release(completed)

    @staticmethod
    def whole(
        status: int, upstream: CIMultiDictProxy[str] | CIMultiDict[str], body: bytes
    ) -> web.Response:
        """An answer whose body is all here, as one Response."""
        response = web.Response(status=status, headers=end_to_end(upstream), body=body)
        if "Content-Type" not in upstream:
            response[UNTYPED] = True
        return response

    async def _stream(
        self,
        request: web.BaseRequest,
        answer: Answer,
        sink: Sink | None,
        extra: tuple[tuple[str, str], ...],
    ) -> web.StreamResponse | None:
        """The answer streamed (compressed when the route says so); None when the upstream
        failed after the head went out, and the client connection was cut."""
        status, upstream_headers, no_body = answer.status, answer.headers, answer.no_body
        declared = upstream_headers.get("Content-Length")
        headers = end_to_end(upstream_headers)
        encoder = None
        compress = self._compressor(request)
        if compress is not None and not no_body:
            if declared is not None:
                headers["Content-Length"] = declared  # seen by the size rule only
            encoder = compress.start(
                status, headers, request.method, request.headers.get("Accept-Encoding", "")
            )
            headers.popall("Content-Length", None)
            if encoder is not None:
                declared = None  # the compressed size is known at the end only
        for name, value in extra:
            headers.add(name, value)
        response = web.StreamResponse(status=status, headers=headers)
        if "Content-Type" not in upstream_headers:
            response[UNTYPED] = True
        if declared is not None and declared.isdigit():
            response.content_length = int(declared)
        elif not no_body and request.version == HttpVersion11:
            response.enable_chunked_encoding()  # HTTP/2 frames the body itself
        await response.prepare(request)
        try:
            if not no_body:
                # Written as it arrives: event streams and chunked answers flow through.
                async for chunk in answer.hold.conn.body(self.config.timeouts.idle_read):
                    if sink is not None:
                        sink.feed(chunk)
                    if encoder is not None:
                        chunk = encoder.chunk(chunk)
                    if chunk:
                        await response.write(chunk)
                if encoder is not None and (tail := encoder.end()):
                    await response.write(tail)
        except UpstreamError:
            # Too late for an error page: cut the client connection so it sees an
            # incomplete response, never a silently short one.
            answer.hold.group.failed(answer.hold.target)
            if request.transport is not None:
                request.transport.abort()
            return None
        await response.write_eof()
        answer.hold.succeeded()
        if sink is not None:
            sink.done()
        return response

    async def _send_body(
        self,
        request: web.BaseRequest,
        send: Callable[[bytes], Awaitable[None]],
        chunked: bool,
        max_body: int,
        attempt: _Attempt,
    ) -> None:
        if request.headers.get("Expect", "").lower() == "100-continue":
            await send_continue(request)  # the gateway answers Expect as it reads the body
        total = 0
        async for chunk in _chunks(request):
            attempt.body_read = True
            total += len(chunk)
            if total > max_body:
                raise HTTPError(413, f"request body is larger than {max_body} bytes")
            # RFC 9112 §7.1 chunk framing when the client sent no Content-Length.
            await send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            await send(b"0\r\n\r\n")
        elif total != request.content_length:
            # The shells refuse such a body; were one to pass, the upstream would wait for
            # bytes that never come while holding a pooled connection (issue 27, D1).
            raise HTTPError(400, "the request body disagrees with its content-length")

    async def _websocket(self, request: web.BaseRequest) -> web.StreamResponse:
        """Both directions of a WebSocket, message for message, with close codes."""
        target = self.group.balancer.pick(self._hash_key(request))
        if target is None:
            raise HTTPError(503, "no healthy upstream", _BUSY)
        url = target.url.replace("http", "ws", 1) + self.upstream_target(request.raw_path)
        protocols = [
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        # The same end-to-end and forwarding headers as plain requests (cookies, auth,
        # origin, X-Forwarded-*); the handshake's own fields are the client library's.
        headers = self._upstream_headers(request, target)
        for name in list(headers):
            if name.lower().startswith("sec-websocket-"):
                del headers[name]
        timeout = aiohttp.ClientTimeout(total=None, connect=self.config.timeouts.connect)
        session = aiohttp.ClientSession(timeout=timeout)
        try:
            try:
                # autoping off on both sides: pings and pongs are forwarded, not answered here.
                upstream = await session.ws_connect(
                    url,
                    protocols=protocols,
                    headers=headers,
                    autoping=False,
                    ssl=self.group.pools[target].ssl_context or True,
                    timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.group.failed(target)
                raise HTTPError(502, f"bad gateway: websocket upgrade failed: {exc}") from None
            client = web.WebSocketResponse(
                protocols=[upstream.protocol] if upstream.protocol else (), autoping=False
            )
            await client.prepare(request)
            idle = self.config.websocket_idle_timeout
            await bridge(client, upstream, idle)
            return client
        finally:
            await session.close()


async def _chunks(request: web.BaseRequest) -> AsyncIterator[bytes]:
    while True:
        chunk = await request.content.read(CHUNK)
        if not chunk:
            return
        yield chunk
