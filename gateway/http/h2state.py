"""The HTTP/2 shell's state beside its protocol: the ``h2`` connection with the settings
it advertises, each stream's body watch, and the per-second counters of the defences."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from aiohttp import web
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.settings import SettingCodes, Settings

from gateway.config import Http2
from gateway.http.h2stream import StreamProtocol
from gateway.observability.throttle import ThrottledLog
from gateway.request.errors import BodyTimeout


class H2Hooks(Protocol):
    """What the shell reports: each answered request, and its connection's events."""

    def observe(
        self, request: web.BaseRequest, response: web.StreamResponse, elapsed: float
    ) -> None: ...

    def h2(self, event: str, reason: str = "") -> None:
        """``stream_opened``, ``stream_closed``, ``reset_received``, ``goaway`` (reason)."""


def refusals_log() -> ThrottledLog:
    """A listener's log of refused HTTP/2 connections: one client can make thousands a
    second, so one line per episode, with a count."""
    return ThrottledLog(logging.getLogger("gateway.http.h2"), "HTTP/2 connections refused")


def h2_connection(limits: Http2) -> H2Connection:
    """A server connection advertising ``limits`` (RFC 9113 §6.5.2), and holding to them:
    h2 refuses more open streams, bigger frames and header lists (HPACK bombs: checked
    as they decode) and, by itself, more than 64 CONTINUATION frames per header block."""
    conn = H2Connection(config=H2Configuration(client_side=False, header_encoding=None))
    conn.local_settings = Settings(
        client=False,
        initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_bytes,
            SettingCodes.HEADER_TABLE_SIZE: limits.header_table_bytes,
            SettingCodes.MAX_FRAME_SIZE: limits.max_frame_bytes,
            SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window_bytes,
        },
    )
    conn.decoder.max_header_list_size = limits.max_header_list_bytes
    conn.decoder.max_allowed_table_size = limits.header_table_bytes
    conn.max_inbound_frame_size = limits.max_frame_bytes
    return conn


def initiate(conn: H2Connection, limits: Http2) -> None:
    """The server's preface: its SETTINGS, and the connection window opened to
    ``limits.connection_window_bytes`` (SETTINGS cannot: RFC 9113 §6.9.2)."""
    conn.initiate_connection()
    extra = limits.connection_window_bytes - conn.inbound_flow_control_window
    if extra > 0:
        conn.increment_flow_control_window(extra)


class Floods:
    """RFC 9113 §10.5: frames a client may make the server process for free, counted per
    second against ``server.http2``'s limits; past one, the connection is cut."""

    __slots__ = ("_control", "_limits", "_resets")

    def __init__(self, limits: Http2) -> None:
        self._limits = limits
        self._resets = PerSecond()
        self._control = PerSecond()

    def reset(self, now: float) -> bool:
        """A RST_STREAM came; True past ``max_resets_per_second`` (rapid reset)."""
        return self._resets.add(now) > self._limits.max_resets_per_second

    def control(self, now: float) -> bool:
        """A SETTINGS, PING or PRIORITY came; True past ``max_control_frames_per_second``."""
        return self._control.add(now) > self._limits.max_control_frames_per_second


class Stream:
    """One stream being served: its request's protocol stand-in and body, its handler
    task, and what waits on the client (its window, its body)."""

    __slots__ = ("body_check", "body_seen", "payload", "protocol", "task", "window")

    def __init__(self, protocol: StreamProtocol, payload: Any) -> None:
        self.protocol = protocol
        self.payload = payload
        self.task: asyncio.Task[None] | None = None
        self.window: asyncio.Event | None = None  # set when the client opens its window
        self.body_seen = 0
        self.body_check: asyncio.TimerHandle | None = None

    async def window_opens(self, within: float) -> bool:
        """Whether the client opens its window (``window`` set) within ``within`` s."""
        self.window = window = asyncio.Event()
        try:
            async with asyncio.timeout(within):
                await window.wait()
        except TimeoutError:
            return False
        finally:
            self.window = None
        return True

    def watch_body(self, loop: asyncio.AbstractEventLoop, window: float, rate: int) -> None:
        """As HTTP/1.1's body watch: every ``window`` seconds a body still arriving must
        have brought a byte (and ``rate`` bytes a second), unless the gateway itself
        stopped taking it; else its reader raises BodyTimeout (408)."""

        def check() -> None:
            self.body_check = None
            payload = self.payload
            if payload.is_eof():
                return
            arrived = payload.total_bytes - self.body_seen
            if self.protocol._reading_paused or arrived >= max(1, rate * window):
                self.body_seen = payload.total_bytes
                self.body_check = loop.call_later(window, check)
                return
            detail = (
                f"request body stalled: no byte in {window:g} s"
                if not arrived
                else f"request body slower than {rate} bytes/s"
            )
            payload.set_exception(BodyTimeout(detail))

        self.body_check = loop.call_later(window, check)

    def end_body(self) -> None:
        if self.body_check is not None:
            self.body_check.cancel()
            self.body_check = None


class PerSecond:
    """Counts events in the current second."""

    __slots__ = ("count", "second")

    def __init__(self) -> None:
        self.count, self.second = 0, 0

    def add(self, now: float) -> int:
        second = int(now)
        if second != self.second:
            self.count, self.second = 0, second
        self.count += 1
        return self.count
