"""One HTTP/2 stream as aiohttp's request and response objects see it.

A handler gets the same ``web.BaseRequest`` over HTTP/2 as over HTTP/1.1: its message is
built from the stream's pseudo-headers (RFC 9113 §8.3.1), its body is an aiohttp
``StreamReader`` fed by DATA frames, and its response is written through
:class:`StreamWriter`, which turns aiohttp's status line and headers into a HEADERS
frame and its body into DATA frames as the client's flow-control window allows.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_parser import RawRequestMessage
from aiohttp.http_writer import HttpVersion
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from gateway.config import Limits
from gateway.request.info import Refusal
from gateway.request.wellformed import declared_length, head_refusal, length_refusal

if TYPE_CHECKING:
    from gateway.http.h2 import H2Protocol

HTTP2 = HttpVersion(2, 0)
# RFC 9113 §8.2.2: connection-specific fields have no meaning in HTTP/2; aiohttp adds
# some of them for HTTP/1.1 (Transfer-Encoding: chunked, Connection: close).
CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
BODY_LIMIT = 1 << 16
# aiohttp's HTTP/1.1 parser spells the names it knows its own way (``Content-Type``);
# HTTP/2's are lowercase. Spelt alike, an upstream gets the same bytes from either.
_CANONICAL = {
    str(name).lower(): str(name) for name in vars(hdrs).values() if isinstance(name, istr)
}  # bytes buffered for a handler before the window stops opening


def request_message(
    headers: list[tuple[bytes, bytes]], limits: Limits, *, ended: bool
) -> tuple[RawRequestMessage, Refusal | None]:
    """aiohttp's view of a request's header block, and a refusal for what the request path
    must not see. h2 has checked the pseudo-headers' presence and order, connection-specific
    fields and ``Host`` against ``:authority``; the rules every shell shares
    (``gateway.request.wellformed``) are checked here, before routing."""
    pseudo: dict[bytes, bytes] = {}
    pairs: list[tuple[str, str]] = []
    raw = []
    cookie = -1  # where the first cookie field is
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
            if name == b":authority":
                # First, where an HTTP/1.1 client writes Host; h2 refused a host field
                # that disagrees, and a request with neither (RFC 9113 §8.3.1).
                pairs.append(("Host", value.decode("latin-1")))
            continue
        raw.append((name, value))
        if name == b"host" and b":authority" in pseudo:
            continue
        # As aiohttp's HTTP/1.1 parser decodes values, so an upstream gets the same bytes.
        text = value.decode("utf-8", "surrogateescape")
        if name == b"cookie":
            # RFC 9113 §8.2.3: a cookie may come split in several fields; one for HTTP/1.1.
            if cookie >= 0:
                pairs[cookie] = ("Cookie", pairs[cookie][1] + "; " + text)
                continue
            cookie = len(pairs)
        decoded = name.decode("latin-1")
        pairs.append((_CANONICAL.get(decoded, decoded), text))
    fields = CIMultiDict(pairs)
    method = pseudo.get(b":method", b"GET").decode("latin-1")
    target = pseudo.get(b":path", b"/").decode("latin-1")
    authority = pseudo.get(b":authority")
    refusal = head_refusal(
        method,
        target,
        authority,
        raw,
        max_fields=limits.max_headers,
    )
    if ended and refusal is None:
        # h2 checks a body against content-length, but not a body that never came.
        refusal = length_refusal(declared_length(raw), 0, ended=True)
    if refusal is not None and not target.startswith("/"):
        target = "/"  # refused: the access log keeps the method, the path is unusable
    path, _, query = target.partition("?")
    url = URL.build(path=path, query_string=query, encoded=True)
    message = RawRequestMessage(
        method, target, HTTP2, CIMultiDictProxy(fields), tuple(raw), False,
        None, False, False, url,
    )  # fmt: skip
    return message, refusal


class StreamTransport:
    """What a handler reaches as ``request.transport``: the connection's facts, and an
    abort that resets this stream only (the proxy cuts a broken answer with it)."""

    def __init__(self, connection: H2Protocol, stream_id: int) -> None:
        self._connection = connection
        self._stream_id = stream_id

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        transport = self._connection.transport
        return transport.get_extra_info(name, default) if transport is not None else default

    def is_closing(self) -> bool:
        return self._connection.stream_closed(self._stream_id)

    def abort(self) -> None:
        self._connection.reset(self._stream_id)

    close = abort


class StreamProtocol:
    """Stands in for aiohttp's ``RequestHandler`` for one stream: what the request, its
    body reader and ``web.StreamResponse`` read from their protocol."""

    max_field_size = 8190
    max_headers = 128
    connected = True

    def __init__(self, connection: H2Protocol, stream_id: int) -> None:
        self.transport = StreamTransport(connection, stream_id)
        self.ssl_context = connection.ssl_context
        self.peername = connection.peername
        self.sockname = connection.sockname
        self._connection = connection
        self._stream_id = stream_id
        self._reading_paused = False
        self._unacknowledged = 0  # body bytes taken while paused: the window they hold

    # The body reader calls these when its buffer is over or back under its limit:
    # flow control stops (or resumes) handing the client window, so a slow handler
    # slows the client, not the gateway's memory.
    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self, resume_parser: bool = True) -> None:
        self._reading_paused = False
        if self._unacknowledged:
            size, self._unacknowledged = self._unacknowledged, 0
            self._connection.acknowledge(self._stream_id, size)

    def received(self, size: int) -> None:
        if self._reading_paused:
            self._unacknowledged += size
        else:
            self._connection.acknowledge(self._stream_id, size)

    def force_close(self) -> None:
        pass  # a stream ends with its response; the connection stays

    def close(self) -> None:
        pass

    keep_alive = close


def body_reader(protocol: StreamProtocol, *, ended: bool) -> StreamReader:
    if ended:
        return EMPTY_PAYLOAD
    loop = asyncio.get_running_loop()
    return StreamReader(protocol, BODY_LIMIT, loop=loop)  # type: ignore[arg-type]


class StreamWriter(AbstractStreamWriter):
    """aiohttp's payload writer for one stream: HEADERS once, then DATA frames within
    the flow-control windows, END_STREAM at the end. Headers wait for the first body
    bytes (or the end) so a bodyless answer is one frame."""

    def __init__(self, connection: H2Protocol, stream_id: int, method: str) -> None:
        self.buffer_size = 0
        self.output_size = 0
        self.length: int | None = 0
        self._connection = connection
        self._stream_id = stream_id
        self._head = method == "HEAD"
        self._headers: list[tuple[str, str]] | None = None
        self._eof = False

    async def write_headers(self, status_line: str, headers: CIMultiDict[str]) -> None:
        status = status_line.split(" ", 2)[1]
        fields = [(":status", status)]
        fields.extend(
            (name.lower(), value)
            for name, value in headers.items()
            if name.lower() not in CONNECTION_SPECIFIC
        )
        self._headers = fields

    def send_headers(self) -> None:
        pass  # with the first DATA or the end: see the class docstring

    async def informational(self, status: int) -> None:
        """An interim answer (``100 Continue``): a HEADERS frame of its own."""
        self._connection.send_headers(self._stream_id, [(":status", str(status))], end=False)

    def _flush_headers(self, end: bool) -> None:
        if self._headers is not None:
            headers, self._headers = self._headers, None
            self._connection.send_headers(self._stream_id, headers, end=end)

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if not chunk or self._head:
            return
        self._flush_headers(end=False)
        self.output_size += len(chunk)
        await self._connection.send_data(self._stream_id, bytes(chunk))

    async def write_eof(self, chunk: bytes = b"") -> None:
        if self._eof:
            return
        self._eof = True
        if chunk and not self._head:
            # The last bytes carry END_STREAM: no empty DATA frame after them.
            self._flush_headers(end=False)
            self.output_size += len(chunk)
            await self._connection.send_data(self._stream_id, bytes(chunk), end=True)
        elif self._headers is not None:
            self._flush_headers(end=True)
        else:
            self._connection.end_stream(self._stream_id)

    async def drain(self) -> None:
        await self._connection.drain()

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        raise RuntimeError("response compression is not offered over HTTP/2")

    def enable_chunking(self) -> None:
        pass  # DATA frames carry the body: HTTP/2 has no chunked coding

    @property
    def transport(self) -> None:
        return None
