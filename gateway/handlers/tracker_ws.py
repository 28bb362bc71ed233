"""``tr/v1/ws``: tracker events over one WebSocket, as the tracker's clients stream them.

Each text frame is one JSON object, an event like a ``tr`` call's body; a binary frame
is the same JSON as an LZ4 block with its uncompressed size in front (4 bytes, little
endian: what the tracker's clients and ``lz4.block`` write). Events are fire-and-forget,
like pixels. What a connection may do is bounded: frame size (compressed and not),
frames per second (the connection waits, it is not dropped), and when the pipeline
refuses an event the connection stops reading until it takes one again, so a client
cannot outrun the spool. A bad frame closes the connection with a code and the reason
(RFC 6455 §7.4: 1007 for bad data, 1009 too big). A frame of a kind RFC 6455 does not
define never reaches the handler: aiohttp's reader closes with 1002 (protocol error).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from typing import Any

import cramjam
import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from aiolimiter import AsyncLimiter

from gateway.events.sink import Sink
from gateway.events.tracker import Tracker, event_name
from gateway.request.info import INFO

_SIZE = struct.Struct("<I")
BACKOFF = 0.05  # seconds between offers while the pipeline refuses
MAX_WAIT = 5.0  # past this a refused event is counted as dropped and reading goes on


class BadFrame(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def decode_frame(kind: WSMsgType, data: Any, max_bytes: int) -> dict[str, Any]:
    """The event object of one frame, or :class:`BadFrame` saying why not."""
    if kind is WSMsgType.BINARY:
        if len(data) < _SIZE.size:
            raise BadFrame(WSCloseCode.INVALID_TEXT, "binary frame shorter than its size prefix")
        (size,) = _SIZE.unpack_from(data)
        if size > max_bytes:
            raise BadFrame(WSCloseCode.MESSAGE_TOO_BIG, f"event larger than {max_bytes} bytes")
        try:
            data = bytes(cramjam.lz4.decompress_block(data))
        except Exception:  # cramjam raises its own DecompressionError
            raise BadFrame(WSCloseCode.INVALID_TEXT, "binary frame is not an LZ4 block") from None
    elif kind is not WSMsgType.TEXT:
        raise BadFrame(WSCloseCode.UNSUPPORTED_DATA, "only text and binary frames")
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadFrame(WSCloseCode.INVALID_TEXT, "frame is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise BadFrame(WSCloseCode.INVALID_TEXT, "frame must be a JSON object")
    return parsed


async def serve(
    request: web.BaseRequest,
    tracker: Tracker,
    sink: Sink,
    *,
    max_frame_bytes: int,
    frames_per_second: int,
    count: Callable[[str], None],
) -> web.WebSocketResponse:
    """Take events from one connection until it closes; ``count`` gets each frame's
    outcome (``accepted``, ``dropped``, ``refused``)."""
    ws = web.WebSocketResponse(max_msg_size=max_frame_bytes, heartbeat=30.0)
    identity = tracker.identify(request)  # the handshake's cookies, for frames without ids
    tracker.set_cookies(ws, identity)
    tracker.cors.decorate(request, ws)
    await ws.prepare(request)
    limiter = AsyncLimiter(frames_per_second, 1.0)
    client_ip = request[INFO].client_ip
    async for message in ws:
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            break
        if message.type is WSMsgType.ERROR:  # e.g. a frame past max_msg_size
            count("refused")
            break
        try:
            properties = decode_frame(message.type, message.data, max_frame_bytes)
        except BadFrame as exc:
            count("refused")
            await ws.close(code=exc.code, message=str(exc).encode())
            break
        await limiter.acquire()  # over the rate the connection waits: back-pressure
        own = tracker.identify(request, properties, mint=False)
        event = tracker.event(
            request, client_ip, own if own.from_client else identity,
            event_type="track", event_name=event_name(properties), properties=properties,
        )  # fmt: skip
        count("accepted" if await _offer(sink, event) else "dropped")
    return ws


async def _offer(sink: Sink, event: Any) -> bool:
    """Offer until the pipeline takes it (reading stops meanwhile), for at most
    ``MAX_WAIT`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_WAIT
    while not sink.try_offer(event):
        if loop.time() >= deadline:
            sink.offer(event)  # counted as dropped by the pipeline
            return False
        await asyncio.sleep(BACKOFF)
    return True
