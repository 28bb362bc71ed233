"""The ``respond`` handler: a fixed response from memory."""

from __future__ import annotations

from aiohttp import web

from gateway.config import Respond
from gateway.handlers import read_body


class RespondHandler:
    """Answers every request with the configured status, headers and body."""

    __slots__ = ("_body", "_headers", "_status")

    def __init__(self, config: Respond) -> None:
        self._status = config.status
        self._body = config.body.encode()
        self._headers = {"Content-Type": config.content_type, **config.headers}

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse:
        # Read (and bound) any body so the connection stays usable for the next request.
        await read_body(request, max_body)
        return web.Response(status=self._status, body=self._body, headers=self._headers)
