"""A scripted origin for the cache's tests: each path answers what the test set, counts
and records the requests that reached it, and dates its answers by the test's clock."""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web

from tests.backends import serving

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Origin:
    url: str = ""
    replies: dict[str, Callable[[web.Request], Any] | Reply] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    clock: Callable[[], float] = time.time

    def answer(self, path: str, status: int = 200, body: bytes = b"hello",
               **headers: str) -> None:  # fmt: skip
        """``path`` answers this from now on (``Cache_Control="max-age=60"``: names with
        underscores for hyphens)."""
        self.replies[path] = (status, {k.replace("_", "-"): v for k, v in headers.items()}, body)

    def hits(self, path: str | None = None) -> int:
        return sum(1 for s in self.seen if path is None or s.path.split("?")[0] == path)

    def date(self, offset: float = 0) -> str:
        return formatdate(self.clock() + offset, usegmt=True)


@contextlib.asynccontextmanager
async def origin() -> AsyncIterator[Origin]:
    scripted = Origin()

    async def handle(request: web.Request) -> web.StreamResponse:
        scripted.seen.append(Seen(request.method, request.path_qs, dict(request.headers)))
        await request.read()
        reply: Any = scripted.replies.get(request.path, (404, {}, b"not scripted"))
        if callable(reply):
            reply = reply(request)
            if inspect.isawaitable(reply):
                reply = await reply
            if isinstance(reply, web.StreamResponse):
                return reply  # streamed by the test's own handler
        status, headers, body = reply
        headers = {"Date": scripted.date(), **headers}
        return web.Response(status=status, headers=headers, body=body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with serving(app) as url:
        scripted.url = url
        yield scripted
