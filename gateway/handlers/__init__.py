"""Route handlers: what a matched route does with a request."""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from aiohttp import web

from gateway.request.errors import HTTPError


class Handler(Protocol):
    """A route's request handler. ``max_body`` is the route's body limit in bytes."""

    async def __call__(self, request: web.BaseRequest, max_body: int) -> web.StreamResponse: ...


async def read_json_object(request: web.BaseRequest, max_body: int) -> dict[str, Any]:
    """The body as a JSON object ({} when empty), or 400 saying what is wrong with it."""
    body = await read_body(request, max_body)
    if not body:
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPError(400, "body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise HTTPError(400, "body must be a JSON object")
    return parsed


async def read_body(request: web.BaseRequest, max_body: int) -> bytes:
    """The whole request body, or 413 as soon as it passes ``max_body`` (chunked too)."""
    if not request.body_exists:
        return b""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_body:
            raise HTTPError(413, f"request body is larger than {max_body} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
