"""Which protocol shell a connection gets: HTTP/2 when TLS's ALPN chose ``h2``, or on a
plain ``h2c`` listener when the client opens with HTTP/2's preface (prior knowledge,
RFC 9113 §3.3); HTTP/1.1 (aiohttp) otherwise. No HTTP/1.1 ``Upgrade: h2c``: browsers
never use it, and one request switching protocols mid-connection is what request
smuggling defences would then have to reason about.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Negotiating(asyncio.Protocol):
    """Holds a new connection until its protocol is known, then hands it over."""

    def __init__(
        self,
        http1: Callable[[], asyncio.Protocol],
        http2: Callable[[], asyncio.Protocol],
        *,
        prior_knowledge: bool,
        first_bytes_timeout: float,
    ) -> None:
        self._timeout = first_bytes_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._http1 = http1
        self._http2 = http2
        self._prior_knowledge = prior_knowledge
        self._transport: asyncio.Transport | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            chosen = ssl_object.selected_alpn_protocol()
            self._switch(self._http2() if chosen == "h2" else self._http1())
        elif not self._prior_knowledge:
            self._switch(self._http1())
        else:  # the first bytes tell (data_received), within the head deadline
            self._deadline = asyncio.get_running_loop().call_later(self._timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        buffered = self._buffer
        if len(buffered) < len(PREFACE) and PREFACE.startswith(buffered):
            return  # maybe the preface, not all in yet
        protocol = self._http2() if buffered.startswith(PREFACE) else self._http1()
        self._switch(protocol)
        protocol.data_received(buffered)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        self._transport = None
        if self._deadline is not None:
            self._deadline.cancel()

    def _switch(self, protocol: asyncio.Protocol) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        transport = self._transport
        assert transport is not None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
