"""On-demand certificates (``tls.acme.on_demand``, Caddy's on-demand TLS): a handshake
for a name no certificate serves asks the ``ask`` URL whether the name may have one and,
if so, orders it. Python's SNI callback cannot wait for an order, so the first handshake
for a new name gets the default certificate (the client reports a name mismatch) and
handshakes after the order get the name's own.

Bounded, since any client may send any name: names are checked against DNS syntax
before anything else; a worker starts at most ``per_minute`` orders a minute and holds at
most ``max_certificates`` names; a name ``ask`` refused (or could not answer for) is not
asked about again for ``refused_for`` seconds; one name is handled at a time."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp

if TYPE_CHECKING:
    from gateway.config import AcmeOnDemand

log = logging.getLogger("gateway.acme")

_NAME = re.compile(
    r"(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?"
)
QUEUE = 64  # names waiting for their turn; more are dropped (their next handshake asks)
REFUSED_KEPT = 10_000  # refused names remembered at most (oldest forgotten first)


class OnDemand:
    def __init__(
        self,
        config: AcmeOnDemand,
        order: Callable[[str], Awaitable[bool]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._order = order  # issue (or load) the name's certificate; True once served
        self._clock = clock
        self._queue: asyncio.Queue[str] = asyncio.Queue(QUEUE)
        self._pending: set[str] = set()
        self._refused: dict[str, float] = {}  # name -> until when
        self._started: deque[float] = deque()  # when the last orders started
        self.held: set[str] = set()

    def wanted(self, name: str) -> None:
        """A handshake asked for ``name`` and nothing serves it (on the loop, from the SNI
        callback: never blocks)."""
        if name in self._pending or name in self.held or not _NAME.fullmatch(name):
            return
        until = self._refused.get(name)
        if until is not None and until > self._clock():
            return
        try:
            self._queue.put_nowait(name)
        except asyncio.QueueFull:
            return
        self._pending.add(name)

    async def run(self) -> None:
        while True:
            name = await self._queue.get()
            try:
                await self._handle(name)
            except Exception:  # one name's failure never stops the others
                log.exception("on-demand certificate for %s failed", name)
            finally:
                self._pending.discard(name)

    async def _handle(self, name: str) -> None:
        config, now = self._config, self._clock()
        if len(self.held) >= config.max_certificates:
            log.warning("on-demand: %s not ordered: max_certificates (%d) held",
                        name, config.max_certificates)  # fmt: skip
            return
        while self._started and self._started[0] <= now - 60:
            self._started.popleft()
        if len(self._started) >= config.per_minute:
            log.warning("on-demand: %s not ordered: per_minute (%d) reached; its next "
                        "handshake asks again", name, config.per_minute)  # fmt: skip
            return
        if not await self._allowed(name):
            self._refuse(name)
            return
        self._started.append(now)
        if await self._order(name):
            self.held.add(name)
            log.info("on-demand: %s now has its certificate", name)

    async def _allowed(self, name: str) -> bool:
        config = self._config
        timeout = aiohttp.ClientTimeout(total=config.ask_timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(config.ask, params={"domain": name}) as resp,
            ):
                allowed = resp.status == 200
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("on-demand: ask for %s failed (%s): refused", name, exc)
            return False
        if not allowed:
            log.info("on-demand: ask refused %s", name)
        return allowed

    def _refuse(self, name: str) -> None:
        if len(self._refused) >= REFUSED_KEPT:
            del self._refused[next(iter(self._refused))]
        self._refused[name] = self._clock() + self._config.refused_for
