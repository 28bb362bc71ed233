"""A route's middleware, built once per runtime, in the order requests meet it:
``ip_deny``/``ip_allow`` (403), the rate limits (by the request path), ``basic_auth``
(401/429), ``forward_auth`` (its service's answer), then the handler, with ``headers``
rules on what goes upstream and on every answer, and ``compress`` on the answer's body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.config import Proxy, Route
from gateway.middleware.access import IPFilter
from gateway.middleware.basic import BasicAuthenticator
from gateway.middleware.compress import Compressor
from gateway.middleware.forward import ForwardAuthenticator, auth_proxy
from gateway.middleware.headers import HeaderRewriter
from gateway.proxy.group import UpstreamGroup
from gateway.request.errors import HTTPError
from gateway.request.info import RequestInfo


@dataclass(frozen=True, slots=True)
class RouteMiddleware:
    ip_filter: IPFilter | None = None
    basic: BasicAuthenticator | None = None
    forward: ForwardAuthenticator | None = None
    request_headers: HeaderRewriter | None = None
    response_headers: HeaderRewriter | None = None
    compress: Compressor | None = None

    @classmethod
    def build(
        cls, route: Route, upstreams: Callable[[Proxy], UpstreamGroup]
    ) -> RouteMiddleware | None:
        """The route's middleware; None when it has none (the request path skips it)."""
        built = cls(
            ip_filter=IPFilter(route.ip_allow, route.ip_deny)
            if route.ip_allow or route.ip_deny
            else None,
            basic=BasicAuthenticator(route.basic_auth) if route.basic_auth else None,
            forward=ForwardAuthenticator(
                route.forward_auth, upstreams(auth_proxy(route.forward_auth))
            )
            if route.forward_auth
            else None,
            request_headers=HeaderRewriter.of(route.headers.request) if route.headers else None,
            response_headers=HeaderRewriter.of(route.headers.response) if route.headers else None,
            compress=Compressor(route.compress) if route.compress else None,
        )
        return None if built == cls() else built

    def admit(self, info: RequestInfo) -> None:
        """Before the rate limits: whether the client's address may use the route."""
        if self.ip_filter is not None and self.ip_filter.refuses(info.client_ip):
            raise HTTPError(403, "client address not allowed on this route")

    async def authenticate(
        self, request: web.BaseRequest, info: RequestInfo
    ) -> web.StreamResponse | None:
        """After the rate limits: None to go on, or the answer the client gets."""
        if self.basic is not None:
            info.user = await self.basic.check(request.headers, info.client_ip)
        if self.forward is not None:
            traceparent = info.trace.traceparent() if info.trace is not None else None
            answer = await self.forward.check(request, info.client_ip, traceparent)
            if isinstance(answer, web.StreamResponse):
                return answer
            info.upstream_headers = answer
        return None

    def compress_whole(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """Compress an answer the handler built whole (respond, a small proxied one);
        streamed answers are compressed by the proxy as they go."""
        assert self.compress is not None
        if type(response) is not web.Response or response.prepared:
            return
        body = response.body
        if not isinstance(body, bytes):
            return
        encoded = self.compress.whole(
            response.status, response.headers, request.method,
            request.headers.get("Accept-Encoding", ""), body,
        )  # fmt: skip
        if encoded is not body:
            response.body = encoded

    def facts(self, info: RequestInfo, host: str) -> dict[str, str]:
        """What header placeholders stand for, for this request."""
        return {
            "client_ip": info.client_ip,
            "request_id": info.request_id,
            "host": host,
            "trace_id": info.trace.trace_id if info.trace is not None else "",
        }
