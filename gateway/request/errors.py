"""Error responses the gateway itself writes: small, plain, with the request id."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from aiohttp import web

REQUEST_ID_HEADER = "X-Request-Id"


class HTTPError(Exception):
    """Raised by a handler to answer with a gateway error page."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail
        self.headers = headers or {}


class BodyTimeout(HTTPError):
    """Set on a request body that stalled (``server.timeouts.read_body``): its reader
    raises it, so every handler that reads a body answers 408, the proxy included."""

    def __init__(self, detail: str) -> None:
        super().__init__(408, detail)


def error_response(
    status: int, detail: str, request_id: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``<status> <reason>: <detail>`` as text/plain, e.g. ``404 Not Found: no route``."""
    reason = HTTPStatus(status).phrase
    response = web.Response(
        status=status,
        text=f"{status} {reason}: {detail}\n",
        content_type="text/plain",
        headers=headers,
    )
    response.headers[REQUEST_ID_HEADER] = request_id
    if status in (408, 413):
        # The refused or stalled body may still be on its way; reading it to keep the
        # connection alive would be the very work the limit exists to avoid.
        response.force_close()
    return response
