"""``forward_auth``: ask an auth service before handling (Traefik's ForwardAuth, Caddy's
forward_auth). The service gets a GET with the client's headers (all, or those listed)
and ``X-Forwarded-Method``, ``-Proto``, ``-Host``, ``-Uri`` and ``-For``; a 2xx lets the
request through, with ``copy_headers`` of its answer added to what the upstream gets;
any other answer goes back to the client as the service gave it (a 302 to a login page,
a 401 with its challenge). The call goes through the proxy's own pooled upstream client.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

from gateway.config import Proxy, WeightedUpstream
from gateway.config.middleware import ForwardAuth
from gateway.proxy.group import UpstreamGroup
from gateway.proxy.headers import FORWARDING, end_to_end, request_head
from gateway.proxy.upstream import UpstreamError
from gateway.request.errors import HTTPError

MAX_ANSWER = 64 << 10  # bytes of a refusal's body relayed to the client
_NOT_SENT = ("content-length", "expect", *FORWARDING)


def auth_proxy(config: ForwardAuth) -> Proxy:
    """The upstream group settings for the auth service: one target, no retries."""
    parts = urlsplit(config.url)
    return Proxy(upstreams=(WeightedUpstream(url=f"{parts.scheme}://{parts.netloc}"),), max_tries=1)


class ForwardAuthenticator:
    def __init__(self, config: ForwardAuth, group: UpstreamGroup) -> None:
        self.config = config
        self.group = group
        self._path = urlsplit(config.url).path or "/"

    def _headers(
        self, request: web.BaseRequest, client_ip: str, traceparent: str | None
    ) -> CIMultiDict[str]:
        incoming = request.headers
        if self.config.request_headers is None:
            headers = end_to_end(incoming, drop=_NOT_SENT)
        else:
            headers = CIMultiDict()
            for name in self.config.request_headers:
                for value in incoming.getall(name, ()):
                    headers.add(name, value)
        target = self.group.targets[0]
        headers["Host"] = target.authority
        headers["X-Forwarded-Method"] = request.method
        headers["X-Forwarded-Proto"] = request.scheme
        headers["X-Forwarded-Host"] = request.host
        headers["X-Forwarded-Uri"] = request.raw_path
        headers["X-Forwarded-For"] = client_ip
        if traceparent is not None:
            headers["traceparent"] = traceparent
        return headers

    async def check(
        self, request: web.BaseRequest, client_ip: str, traceparent: str | None = None
    ) -> list[tuple[str, str]] | web.Response:
        """The headers to add upstream (allowed), or the answer for the client."""
        head = request_head("GET", self._path, self._headers(request, client_ip, traceparent))
        try:
            async with asyncio.timeout(self.config.timeout):
                status, headers, body = await self._ask(head)
        except TimeoutError:
            raise HTTPError(504, "auth service timed out") from None
        except (UpstreamError, OSError) as exc:
            raise HTTPError(502, f"auth service unavailable: {exc}") from None
        if 200 <= status < 300:
            return [(n, v) for n in self.config.copy_headers for v in headers.getall(n, ())]
        return web.Response(status=status, headers=end_to_end(headers), body=body)

    async def _ask(self, head: bytes) -> tuple[int, CIMultiDict[str], bytes]:
        pool = self.group.pools[self.group.targets[0]]
        for attempt in range(2):
            conn, reused = await pool.acquire(self.config.timeout)
            complete = False
            try:
                await conn.send(head)
                status, headers = await conn.response_head()
                body = bytearray()
                async for chunk in conn.body(self.config.timeout):
                    body += chunk
                    if len(body) > MAX_ANSWER:
                        raise UpstreamError("auth service answer too large")
                complete = True
                return status, headers, bytes(body)
            except UpstreamError:
                if not (reused and attempt == 0):
                    raise
                # A kept-alive connection the service had closed: once more, on a new one.
            finally:
                if not complete:
                    conn.close()
                pool.release(conn)
        raise AssertionError("unreachable")
