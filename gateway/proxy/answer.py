"""An upstream's answer whose head has arrived, with the pooled connection its body is
still to come on: what the proxy handler relays, and the cache stores as it goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.proxy.balancer import Target
from gateway.proxy.group import UpstreamGroup
from gateway.proxy.upstream import Pool, UpstreamConnection


class Sink(Protocol):
    """What sees a relayed body besides the client: every chunk, then its end."""

    def feed(self, chunk: bytes) -> None: ...

    def done(self) -> None: ...


class Hold:
    """An upstream connection lent to an answer until its body is relayed."""

    __slots__ = ("conn", "group", "pool", "target")

    def __init__(
        self, group: UpstreamGroup, target: Target, pool: Pool, conn: UpstreamConnection
    ) -> None:
        self.group, self.target, self.pool, self.conn = group, target, pool, conn

    def succeeded(self) -> None:
        self.target.record_success()

    def release(self, completed: bool) -> None:
        """Back to the pool when the exchange completed; closed otherwise."""
        self.target.in_flight -= 1
        if not completed:
            self.conn.close()
        self.pool.release(self.conn)


@dataclass(slots=True)
class Answer:
    """An upstream's answer whose head has arrived; ``whole`` is the body when it came
    with the head."""

    status: int
    headers: CIMultiDict[str]
    whole: bytes | None
    no_body: bool
    hold: Hold


class Upstream(Protocol):
    """The proxy handler as the cache in front of it uses it."""

    async def fetch(
        self,
        request: web.BaseRequest,
        max_body: int,
        adjust: Callable[[CIMultiDict[str]], None] | None = None,
    ) -> Answer: ...

    async def relay(
        self,
        request: web.BaseRequest,
        answer: Answer,
        sink: Sink | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> web.StreamResponse: ...

    def whole(
        self, status: int, upstream: CIMultiDictProxy[str] | CIMultiDict[str], body: bytes
    ) -> web.Response: ...
