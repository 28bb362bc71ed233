"""The request objects of the HTTP/1.1 shell: each head settled (``gateway.http.head``)
and its body watched as it is parsed, each response head finished by the request
path's rules (``gateway.request.response``) plus the shell's own: ``Connection: close``
once the worker is draining, so a client sends no further request on a connection
about to close.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestHandler

from gateway.http.h1 import GatewayProtocol
from gateway.http.head import settle
from gateway.request.info import INFO, REFUSED
from gateway.request.response import HstsPolicy, finish_head

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
            finish_head(response, self.host, policy() if policy is not None else None)
            info = self.get(INFO)
            if info is not None and info.response_fields:
                for name, value in info.response_fields:
                    response.headers.add(name, value)
            rules = info.middleware if info is not None else None
            if rules is not None and rules.response_headers is not None:
                assert info is not None
                rules.response_headers.apply(response.headers, rules.facts(info, self.host))
            protocol = self._protocol
            if isinstance(protocol, GatewayProtocol) and protocol.draining:
                # The hook runs after aiohttp chose the Connection header: set both.
                response.force_close()
                response.headers["Connection"] = "close"

    def make(
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        message, refusal = settle(message, max_line)
        if isinstance(protocol, GatewayProtocol):
            protocol.input_pending = False  # what came is this request (and its body)
            if payload is not EMPTY_PAYLOAD:
                protocol.watch_body(payload)
        request = GatewayRequest(message, payload, protocol, writer, task, loop)
        if refusal is not None:
            request[REFUSED] = refusal
        return request

    return make
