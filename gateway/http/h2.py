"""The HTTP/2 shell: one connection's frames, on the ``h2`` library (sans-IO).

Each stream becomes an aiohttp request (``gateway.http.h2stream``) handed to the same
handler as HTTP/1.1's. This module owns what is HTTP/2's alone: the settings it
advertises, flow control both ways, and the defences RFC 9113 §10.5 asks for, each with
a limit in ``server.http2``: resets (CVE-2023-44487, rapid reset) and SETTINGS/PING
frames per second, past which the connection gets GOAWAY ``ENHANCE_YOUR_CALM``; h2's own
caps on CONTINUATION frames and on decoded header lists (HPACK bombs); a client that
never reads (its queued frames) or never opens its window (cut at the idle timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from time import perf_counter
from typing import Any, cast

from aiohttp import web
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import DenialOfServiceError, ProtocolError, StreamClosedError
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import GoAwayFrame

from gateway.config import Server as ServerConfig
from gateway.http.h2state import Floods, H2Hooks, Stream, h2_connection, initiate
from gateway.http.h2stream import StreamProtocol, StreamWriter, body_reader, request_message
from gateway.request.info import REFUSED

log = logging.getLogger("gateway.http.h2")


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
Factory = Callable[..., web.BaseRequest]


class H2Protocol(asyncio.Protocol):
    """One HTTP/2 connection (after ALPN ``h2``, or h2c with prior knowledge)."""

    def __init__(
        self,
        manager: Any,
        settings: ServerConfig,
        *,
        handler: Handler,
        factory: Factory,
        hooks: H2Hooks,
    ) -> None:
        self._manager = manager
        self._handler = handler
        self._factory = factory
        self._hooks = hooks
        self._limits = limits = settings.http2
        self._timeouts = settings.timeouts
        self._head_limits = settings.limits
        self._read_body_rate = settings.limits.min_body_rate
        self._loop = asyncio.get_running_loop()
        self._conn = h2_connection(limits)
        self._streams: dict[int, Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.ssl_context: Any = None
        self.peername: Any = None
        self.sockname: Any = None
        self._task_handler = None  # read by aiohttp's Server.connection_lost
        self._closing = False  # GOAWAY sent: no new streams
        self._refused = False  # ... and with an error: the connection is over
        self._floods = Floods(limits)
        self._timer: asyncio.TimerHandle | None = None
        self._writable: asyncio.Future[None] | None = None
        self._idle = asyncio.Event()  # set while no stream is open
        self._idle.set()
        self._served = 0

    # --- the transport's side ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        self.ssl_context = transport.get_extra_info("sslcontext")
        self._manager.connection_made(self, transport)
        initiate(self._conn, self._limits)
        self._flush()
        # Until the first request: the head deadline, as for HTTP/1.1 (slow-loris).
        self._timer = self._loop.call_later(self._timeouts.read_header, self._timed_out)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._conn.receive_data(data)
        except ProtocolError as exc:
            # h2 queued a GOAWAY naming the error; send it and hang up.
            calm = isinstance(exc, DenialOfServiceError)
            self._hooks.h2("goaway", "enhance_your_calm" if calm else "protocol_error")
            self._manager.h2_refusals("HTTP/2 connection from %s refused: %s", self.peername, exc)
            self._flush()
            self._close_transport()
            return
        for event in events:
            if self._refused:
                return  # a GOAWAY with an error went out: nothing after it is served
            if isinstance(event, RequestReceived):
                self._request(event)
            elif isinstance(event, DataReceived):
                self._data(event)
            elif isinstance(event, StreamEnded):
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream.end_body()
                    stream.payload.feed_eof()
            elif isinstance(event, StreamReset):
                self._reset_received(event.stream_id)
            elif isinstance(event, WindowUpdated):
                self._window_opened(event.stream_id)
            elif isinstance(event, RemoteSettingsChanged | PingReceived | PriorityUpdated):
                if self._floods.control(self._loop.time()):
                    self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "control_flood")
                    return
                if isinstance(event, RemoteSettingsChanged):
                    self._window_opened(0)  # a new INITIAL_WINDOW_SIZE may open windows
            elif isinstance(event, ConnectionTerminated):
                self._closing = True
                if not self._streams:
                    self._close_transport()
        self._flush()

    def eof_received(self) -> bool:
        return False  # HTTP/2 has no half-closed connection: close

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timer()
        # h2's connection is a reference cycle, freed by a full collection the worker's
        # thresholds make rare: its buffer, up to a header block, goes now (issue 27, D7).
        self._conn.incoming_buffer = FrameBuffer(server=True)
        for stream in list(self._streams.values()):
            if stream.task is not None:
                stream.task.cancel()
            stream.payload.set_exception(ConnectionResetError("the client went away"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("the client went away"))
        self.transport = None
        self._manager.connection_lost(self, exc)

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # --- what the streams call ---
    def stream_closed(self, stream_id: int) -> bool:
        return stream_id not in self._streams or self.transport is None

    def acknowledge(self, stream_id: int, size: int) -> None:
        """The handler took ``size`` body bytes: give the client that window back."""
        if self.transport is not None:
            self._conn.acknowledge_received_data(size, stream_id)
            self._flush()

    def send_headers(self, stream_id: int, headers: list[tuple[str, str]], *, end: bool) -> None:
        if self.stream_closed(stream_id):
            raise ConnectionResetError("the stream was reset")
        self._conn.send_headers(stream_id, headers, end_stream=end)
        self._flush()

    async def send_data(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        """DATA frames as the stream's and the connection's windows allow, the last with
        END_STREAM when ``end``; a client that keeps its window shut longer than the
        idle timeout gets the stream reset."""
        conn = self._conn
        view = memoryview(data)
        while view:
            if self.stream_closed(stream_id):
                raise ConnectionResetError("the stream was reset")
            try:
                room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            except StreamClosedError:
                raise ConnectionResetError("the stream was reset") from None
            if room <= 0:
                await self._wait_for_window(stream_id)
                continue
            view, chunk = view[room:], view[:room].tobytes()
            conn.send_data(stream_id, chunk, end_stream=end and not view)
            self._flush()
            await self.drain()

    def end_stream(self, stream_id: int) -> None:
        if not self.stream_closed(stream_id):
            self._conn.end_stream(stream_id)
            self._flush()

    def reset(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None or self.transport is None:
            return
        stream.end_body()
        with contextlib.suppress(StreamClosedError):
            self._conn.reset_stream(stream_id, code)
        stream.payload.set_exception(ConnectionResetError("the stream was reset"))
        self._stream_gone()
        self._flush()

    async def drain(self) -> None:
        if self._writable is not None and not self._writable.done():
            await self._writable
        elif self.transport is None:
            raise ConnectionResetError("the client went away")

    # --- shutdown, as aiohttp's server calls it (pre_shutdown, then shutdown) ---

    def close(self) -> None:
        """Stop taking streams: GOAWAY with the last stream id (RFC 9113 §6.8)."""
        if not self._closing:
            self.goaway(ErrorCodes.NO_ERROR, "shutdown")

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp's signature
        self.close()
        if self._streams and timeout:
            try:
                async with asyncio.timeout(timeout):
                    await self._idle.wait()
            except TimeoutError:
                pass
        for stream in list(self._streams.values()):
            if stream.task is not None:
                stream.task.cancel()
        self._close_transport()

    def goaway(self, code: ErrorCodes, reason: str) -> None:
        """Tell the client no stream past the last one will be served; with an error
        code, the connection ends now, else when its streams are done."""
        if self.transport is None or self._refused:
            return
        self._hooks.h2("goaway", reason)
        self._closing = True
        self._refused = code != ErrorCodes.NO_ERROR
        last = self._conn.highest_inbound_stream_id
        if self._refused:
            self._conn.close_connection(code, last_stream_id=last)
            self._flush()
            self._close_transport()
            return
        # Graceful: written past h2, whose state machine would refuse every frame after
        # its own GOAWAY, while the streams up to ``last`` still have answers to send.
        self._flush()
        if self.transport is None:
            return
        self.transport.write(GoAwayFrame(0, last_stream_id=last, error_code=code).serialize())
        if not self._streams:
            self._close_transport()

    # --- internals ---
    def _request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        if self._closing:
            self._conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self._cancel_timer()  # a request came: the head deadline and idle timer are met
        ended = event.stream_ended is not None
        message, refusal = request_message(event.headers or [], self._head_limits, ended=ended)
        protocol = StreamProtocol(self, stream_id)
        payload = body_reader(protocol, ended=ended)
        stream = self._streams[stream_id] = Stream(protocol, payload)
        self._idle.clear()
        self._served += 1
        self._hooks.h2("stream_opened")
        writer = StreamWriter(self, stream_id, message.method)
        stream.task = self._loop.create_task(
            self._serve(stream_id, stream, message, refusal, writer)
        )
        if not ended:
            stream.watch_body(self._loop, self._timeouts.read_body, self._read_body_rate)

    async def _serve(
        self, stream_id: int, stream: Stream, message: Any, refusal: Any, writer: StreamWriter
    ) -> None:
        task = asyncio.current_task()
        request = self._factory(message, stream.payload, stream.protocol, writer, task)
        if refusal is not None:
            request[REFUSED] = refusal
        started = perf_counter()
        try:
            try:
                response = await self._handler(request)
            except web.HTTPException as exc:
                response = exc  # aiohttp's own exceptions are responses too
            await response.prepare(request)
            await response.write_eof()
        except ConnectionResetError:
            return  # the stream was reset, or the client went away
        except Exception:
            log.exception("HTTP/2 stream %d failed", stream_id)
            self.reset(stream_id, ErrorCodes.INTERNAL_ERROR)
            return
        finally:
            if self._streams.get(stream_id) is stream:
                del self._streams[stream_id]
                stream.end_body()
                self._stream_gone()
        self._hooks.observe(request, response, perf_counter() - started)
        if not stream.payload.is_eof() and self.transport is not None:
            # Answered before the body was all in (a 413, say): the rest is not wanted
            # (RFC 9113 §8.1).
            with contextlib.suppress(StreamClosedError):
                self._conn.reset_stream(stream_id, ErrorCodes.NO_ERROR)
            self._flush()

    def _data(self, event: DataReceived) -> None:
        stream = self._streams.get(event.stream_id)
        size = event.flow_controlled_length
        if stream is None:
            # Reset by us meanwhile: the bytes still count against the connection.
            self._conn.acknowledge_received_data(size, event.stream_id)
            return
        stream.payload.feed_data(event.data)
        stream.protocol.received(size)

    def _reset_received(self, stream_id: int) -> None:
        self._hooks.h2("reset_received")
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.end_body()
            if stream.task is not None:
                stream.task.cancel()  # nobody will read the answer: stop working on it
            stream.payload.set_exception(ConnectionResetError("the client reset the stream"))
            self._stream_gone()
        if self._floods.reset(self._loop.time()):
            self.goaway(ErrorCodes.ENHANCE_YOUR_CALM, "rapid_reset")

    def _stream_gone(self) -> None:
        self._hooks.h2("stream_closed")
        if self._streams:
            return
        self._idle.set()
        if self._closing:
            self._close_transport()
        elif self.transport is not None:
            self._timer = self._loop.call_later(self._timeouts.keepalive, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if not self._streams:
            self.goaway(ErrorCodes.NO_ERROR, "idle" if self._served else "no_request")

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _wait_for_window(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise ConnectionResetError("the stream was reset")
        if not await stream.window_opens(self._timeouts.keepalive):
            self._hooks.h2("goaway", "window_stalled")
            self.reset(stream_id, ErrorCodes.FLOW_CONTROL_ERROR)
            raise ConnectionResetError("the client's window stayed closed")

    def _window_opened(self, stream_id: int) -> None:
        streams = self._streams.values() if stream_id == 0 else [self._streams.get(stream_id)]
        for stream in streams:
            if stream is not None and stream.window is not None:
                stream.window.set()

    def _flush(self) -> None:
        # At once: one write per loop iteration measured the same (h2load -c50 -m10).
        transport = self.transport
        if transport is None:
            return
        data = self._conn.data_to_send()
        if data:
            transport.write(data)
        if (
            transport.get_write_buffer_size() > self._limits.max_write_buffer_bytes
            and not transport.is_closing()  # cut already: counted once
        ):
            # A client that sends (pings, say) but never reads what it asked for.
            self._hooks.h2("goaway", "not_reading")
            self._close_transport(abort=True)

    def _close_transport(self, abort: bool = False) -> None:
        self._cancel_timer()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
