"""Last touches to every response head, as it is prepared (so streamed answers get
them as well as the ones built whole):

- HTTP Strict Transport Security (RFC 6797), opt-in per host, on HTTPS answers only
  (§7.2: a plain-HTTP answer must not carry it);
- a relayed answer that had no ``Content-Type`` keeps none: aiohttp would add
  ``application/octet-stream``, which forbids the client's sniffing the upstream chose
  to allow (RFC 9110 §8.3);
- ``Connection: close`` once the worker is draining, so a client does not send another
  request on a connection about to close;
- ``Server`` names the product, not the Python and aiohttp versions aiohttp would
  advertise to anyone fingerprinting the edge (an upstream's own is relayed, unless it
  is that very string).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler

from gateway.config import Hsts
from gateway.http.h1 import GatewayProtocol
from gateway.http.head import Refusal, settle
from gateway.request.router import normalize_host

HEADER = "Strict-Transport-Security"
SERVER = "edge-gateway"
# Set on a response relayed from an upstream that sent no Content-Type.
UNTYPED = web.ResponseKey("gateway.untyped", bool)
# Set on a request whose head the request path must not see (see gateway.http.head).
REFUSED = web.RequestKey("gateway.refused", Refusal)


class HstsPolicy:
    """Host → header value; exact names and one-label wildcards, like routes."""

    __slots__ = ("_exact", "_parents")

    def __init__(self, entries: tuple[Hsts, ...]) -> None:
        self._exact: dict[str, str] = {}
        self._parents: dict[str, str] = {}
        for entry in entries:
            for host in entry.hosts:
                if host.startswith("*."):
                    self._parents.setdefault(host[2:], entry.header)
                else:
                    self._exact.setdefault(host, entry.header)

    def header_for(self, host: str) -> str | None:
        found = self._exact.get(host)
        if found is None and "." in host:
            found = self._parents.get(host.split(".", 1)[1])
        return found


RequestFactory = Callable[
    [RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter, "asyncio.Task[None]"],
    web.BaseRequest,
]


def request_factory(
    policy: Callable[[], HstsPolicy | None] | None, *, max_line: int
) -> RequestFactory:
    """Requests of a listener, their heads settled (``gateway.http.head``); with
    ``policy`` (HTTPS listeners), their responses get its header (read per response, so
    a reload applies at once)."""
    loop = asyncio.get_running_loop()

    class GatewayRequest(web.BaseRequest):
        async def _prepare_hook(self, response: web.StreamResponse) -> None:
            headers = response.headers
            if headers.get("Server") == SERVER_SOFTWARE:  # aiohttp's default, not relayed
                headers["Server"] = SERVER
            if response.get(UNTYPED):
                headers.popall("Content-Type", None)
            protocol = self._protocol
            if isinstance(protocol, GatewayProtocol) and protocol.draining:
                # The hook runs after aiohttp chose the Connection header: set both.
                response.force_close()
                headers["Connection"] = "close"
            current = policy() if policy is not None else None
            if current is not None:
                header = current.header_for(normalize_host(self.host))
                if header is not None:
                    response.headers[HEADER] = header

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        message, refusal = settle(message, max_line)
        if payload is not EMPTY_PAYLOAD and isinstance(protocol, GatewayProtocol):
            protocol.watch_body(payload)
        request = GatewayRequest(message, payload, protocol, writer, task, loop)
        if refusal is not None:
            request[REFUSED] = refusal
        return request

    return make
