"""HTTP/2 requests in front of an HTTP/1.1 upstream (issue 27): what the gateway refuses
from an HTTP/1.1 client is refused over HTTP/2 too, before routing, and what it forwards
reaches the upstream byte for byte as the same request from an HTTP/1.1 client would. A
raw upstream records every byte it receives; each case runs over h2c and over TLS."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.events
import pytest
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from tests.backends import raw_backend, read_head
from tests.client import eventually
from tests.http.h2_support import RawH2, client_context, h2_config, raw_h2
from tests.support import InProcessGateway, in_process_gateway, with_routes

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Upstream:
    """Every byte each connection brought, and each request read whole."""

    url: str = ""
    connections: list[bytearray] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def recording_upstream() -> AsyncIterator[Upstream]:
    upstream = Upstream()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen = bytearray()
        upstream.connections.append(seen)
        while True:
            try:
                head = await read_head(reader)
            except asyncio.IncompleteReadError as exc:
                seen += exc.partial
                return
            seen += head
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            try:
                body = await reader.readexactly(length)
            except asyncio.IncompleteReadError as exc:
                seen += exc.partial
                return
            seen += body
            upstream.requests.append(head + body)
            writer.write(OK)
            await writer.drain()

    async with raw_backend(serve) as url:
        upstream.url = url
        yield upstream


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, upstream: Upstream, **server: Any) -> AsyncIterator[Any]:
    config = with_routes(
        h2_config(tmp_path, tls=True, **server),
        {"name": "app", "match": {"path_prefix": "/"}, "proxy": {"upstreams": [upstream.url]}},
    )
    async with in_process_gateway(config, tmp_path) as gw:
        yield gw


@contextlib.asynccontextmanager
async def client(gw: InProcessGateway, tmp_path: Path, kind: str) -> AsyncIterator[RawH2]:
    if kind == "tls":
        context = client_context(tmp_path, ["h2"])
        async with raw_h2(gw.ports["secure"], tls=context, strict=False) as conn:
            yield conn
    else:
        async with raw_h2(gw.ports["public"], strict=False) as conn:
            yield conn


def has(condition: Callable[[], object]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(condition())

    return check


def head(kind: str, method: bytes = b"GET", path: bytes = b"/p/x") -> list[tuple[bytes, bytes]]:
    scheme = b"https" if kind == "tls" else b"http"
    return [(b":method", method), (b":scheme", scheme), (b":authority", b"localhost"),
            (b":path", path)]  # fmt: skip


async def outcome(conn: RawH2, stream_id: int) -> tuple[str, Any, bytes]:
    """``("answer", status, body)``, ``("reset", code, b"")`` or ``("goaway", code, b"")``."""
    status, body = None, b""
    async with asyncio.timeout(5):
        while True:
            for event in list(conn.events):
                conn.events.remove(event)
                if isinstance(event, h2.events.ConnectionTerminated):
                    return "goaway", event.error_code, b""
                if getattr(event, "stream_id", None) != stream_id:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                elif isinstance(event, h2.events.StreamEnded):
                    return "answer", status, body
                elif isinstance(event, h2.events.StreamReset):
                    return "reset", event.error_code, b""
            if not await conn.read():
                goaways = [f for f in conn.frames() if isinstance(f, GoAwayFrame)]
                assert goaways, "closed with neither an answer nor GOAWAY"
                return "goaway", ErrorCodes(goaways[-1].error_code), b""


async def send(
    conn: RawH2, headers: list[tuple[bytes, bytes]], data: bytes | None = None
) -> tuple[str, Any, bytes]:
    stream_id = conn.conn.get_next_available_stream_id()
    conn.conn.send_headers(stream_id, headers, end_stream=data is None)
    if data is not None:
        conn.conn.send_data(stream_id, data, end_stream=True)
    conn.flush()
    return await outcome(conn, stream_id)


async def h1_request(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    async with asyncio.timeout(5):
        reply = await reader.read(65536)
    writer.close()
    return reply


KINDS = pytest.mark.parametrize("kind", ["h2c", "tls"])

# (case, extra fields or pseudo-header replacements, expected outcome)
REFUSED_400: list[tuple[str, dict[bytes, bytes], list[tuple[bytes, bytes]]]] = [
    ("method-with-target", {b":method": b"GET /internal/x"}, []),
    ("method-lowercase", {b":method": b"get"}, []),
    ("method-not-a-token", {b":method": b"G(T"}, []),
    ("method-unknown", {b":method": b"FOO"}, []),
    ("path-with-request-line", {b":path": b"/p/c67 HTTP/1.1\tX: /internal/x"}, []),
    ("path-with-tab", {b":path": b"/p/a\tb"}, []),
    ("path-non-ascii", {b":path": "/p/é".encode()}, []),
    ("path-not-origin-form", {b":path": b"p/x"}, []),
    ("authority-with-userinfo", {b":authority": b"user@localhost"}, []),
    ("name-not-a-token", {}, [(b"x(y)", b"1")]),
    ("name-with-backslash", {}, [(b"transfer-encoding\\", b"chunked")]),
    ("value-with-vt", {}, [(b"x-v", b"a\x0bb")]),
    ("value-with-soh", {}, [(b"x-v", b"a\x01b")]),
    ("value-with-del", {}, [(b"x-v", b"a\x7fb")]),
]


@KINDS
@pytest.mark.parametrize(("case", "pseudo", "fields"), REFUSED_400, ids=[c[0] for c in REFUSED_400])
async def test_a_head_an_http1_client_could_not_send_is_400_and_never_forwarded(
    tmp_path: Path,
    kind: str,
    case: str,
    pseudo: dict[bytes, bytes],
    fields: list[tuple[bytes, bytes]],
) -> None:
    async with recording_upstream() as upstream, gateway(tmp_path, upstream) as gw:
        async with client(gw, tmp_path, kind) as conn:
            headers = [(name, pseudo.get(name, value)) for name, value in head(kind)] + fields
            result = await send(conn, headers)
            after = await send(conn, head(kind, path=b"/after"))  # the connection lives on
    assert result[:2] == ("answer", 400), result
    assert result[2].startswith(b"400 Bad Request: "), result
    assert after == ("answer", 200, b"ok")
    assert [r.split(b"\r\n")[0] for r in upstream.requests] == [b"GET /after HTTP/1.1"]


# What h2 itself refuses as a connection error (RFC 9113 §8.2.1, §8.2.2): never forwarded.
REFUSED_GOAWAY: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("value-with-crlf", [(b"x-v", b"a\r\nX-Injected: 1")]),
    ("value-with-nul", [(b"x-v", b"a\x00b")]),
    ("name-with-space", [(b"bad header", b"v")]),
    ("name-uppercase", [(b"X-Up", b"1")]),
    ("transfer-encoding", [(b"transfer-encoding", b"chunked")]),
    ("content-length-twice", [(b"content-length", b"1"), (b"content-length", b"2")]),
    ("value-leading-space", [(b"x-v", b" a")]),
]


@KINDS
@pytest.mark.parametrize(("case", "fields"), REFUSED_GOAWAY, ids=[c[0] for c in REFUSED_GOAWAY])
async def test_what_h2_refuses_ends_the_connection_and_is_never_forwarded(
    tmp_path: Path, kind: str, case: str, fields: list[tuple[bytes, bytes]]
) -> None:
    async with recording_upstream() as upstream, gateway(tmp_path, upstream) as gw:
        async with client(gw, tmp_path, kind) as conn:
            result = await send(conn, head(kind, b"POST") + fields, b"x")
    assert result[:2] == ("goaway", ErrorCodes.PROTOCOL_ERROR)
    assert upstream.connections == []


@KINDS
async def test_content_length_with_no_body_is_400_and_holds_no_upstream(
    tmp_path: Path, kind: str
) -> None:
    """D1: HEADERS with ``content-length: 5`` and END_STREAM, no DATA."""
    async with recording_upstream() as upstream, gateway(tmp_path, upstream) as gw:
        async with client(gw, tmp_path, kind) as conn:
            headers = [*head(kind, b"POST", b"/p/one"), (b"content-length", b"5")]
            results = [await send(conn, headers) for _ in range(3)]
            after = await send(conn, head(kind, path=b"/after"))
    expected = b"400 Bad Request: content-length is 5 but the body has 0 bytes\n"
    assert results == [("answer", 400, expected)] * 3
    assert after == ("answer", 200, b"ok")
    assert [r.split(b"\r\n")[0] for r in upstream.requests] == [b"GET /after HTTP/1.1"]


@KINDS
@pytest.mark.parametrize("body", [b"hi", b"hello world"], ids=["shorter", "longer"])
async def test_a_body_that_disagrees_with_content_length_is_never_forwarded(
    tmp_path: Path, kind: str, body: bytes
) -> None:
    async with recording_upstream() as upstream, gateway(tmp_path, upstream) as gw:
        async with client(gw, tmp_path, kind) as conn:
            headers = [*head(kind, b"POST", b"/p/one"), (b"content-length", b"5")]
            result = await send(conn, headers, body)
    assert result[:2] == ("goaway", ErrorCodes.PROTOCOL_ERROR)
    assert upstream.requests == []


@KINDS
async def test_a_body_cut_short_after_its_head_went_upstream_is_not_completed(
    tmp_path: Path, kind: str
) -> None:
    """The head is forwarded as the stream opens; when the DATA that follows disagrees
    with content-length, the upstream connection is closed mid-body: the upstream never
    holds a whole request."""
    async with recording_upstream() as upstream, gateway(tmp_path, upstream) as gw:
        async with client(gw, tmp_path, kind) as conn:
            stream_id = conn.conn.get_next_available_stream_id()
            headers = [*head(kind, b"POST", b"/p/one"), (b"content-length", b"5")]
            conn.conn.send_headers(stream_id, headers)
            conn.flush()
            await eventually(has(lambda: upstream.connections), "the head reached the upstream")
            conn.conn.send_data(stream_id, b"hi", end_stream=True)
            conn.flush()
            result = await outcome(conn, stream_id)
        await eventually(
            has(lambda: upstream.connections[0].endswith(b"\r\n\r\n")), "the head in whole"
        )
    assert result[:2] == ("goaway", ErrorCodes.PROTOCOL_ERROR)
    assert upstream.requests == []
    assert upstream.connections[0].startswith(b"POST /p/one HTTP/1.1\r\n")


@KINDS
async def test_more_header_fields_than_max_headers_is_431(tmp_path: Path, kind: str) -> None:
    """D5: ``server.limits.max_headers`` over HTTP/2 as over HTTP/1.1."""
    async with recording_upstream() as upstream, gateway(tmp_path, upstream) as gw:
        async with client(gw, tmp_path, kind) as conn:
            fields = [(b"x-h%d" % i, b"v") for i in range(101)]
            over = await send(conn, head(kind) + fields)
            at = await send(conn, head(kind) + fields[:100])
    assert over == (
        "answer",
        431,
        b"431 Request Header Fields Too Large: more than 100 header fields\n",
    )
    assert at == ("answer", 200, b"ok")
    assert len(upstream.requests) == 1


@KINDS
async def test_line_limits_are_414_and_431_as_over_http1(tmp_path: Path, kind: str) -> None:
    async with recording_upstream() as upstream, gateway(tmp_path, upstream) as gw:
        async with client(gw, tmp_path, kind) as conn:
            long_path = await send(conn, head(kind, path=b"/" + b"a" * 8190))
            long_field = await send(conn, [*head(kind), (b"x-long", b"v" * 8190)])
    assert long_path[:2] == ("answer", 414)
    assert long_field == (
        "answer",
        431,
        b"431 Request Header Fields Too Large: a header line is longer than 8190 bytes\n",
    )
    assert upstream.connections == []


@KINDS
async def test_forwarded_head_is_the_one_an_http1_client_gets_byte_for_byte(
    tmp_path: Path, kind: str
) -> None:
    """D4 among them: non-ASCII value bytes arrive as they were sent, not re-encoded. (h2
    joins split cookie fields into one at the end of the block, RFC 9113 §8.2.3.)"""
    fields = [(b"x-name", "José ✓".encode()), (b"x-tab", b"a\tb"), (b"x-obs", b"\x80\xff"),
              (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"content-type", b"text/plain"),
              (b"content-length", b"5")]  # fmt: skip
    untraced = {"trace_context": {"enabled": False}}
    async with recording_upstream() as upstream, gateway(tmp_path, upstream, **untraced) as gw:
        async with client(gw, tmp_path, kind) as conn:
            over_h2 = await send(conn, head(kind, b"PUT", b"/p/q?a=1&b=%20") + fields, b"hello")
        h1 = (
            b"PUT /p/q?a=1&b=%20 HTTP/1.1\r\nhost: localhost\r\n"
            b"x-name: Jos\xc3\xa9 \xe2\x9c\x93\r\nx-tab: a\tb\r\nx-obs: \x80\xff\r\n"
            b"content-type: text/plain\r\n"
            b"content-length: 5\r\ncookie: a=1; b=2\r\n\r\nhello"
        )
        assert (await h1_request(gw.ports["public"], h1)).startswith(b"HTTP/1.1 200 OK\r\n")
    assert over_h2 == ("answer", 200, b"ok")
    from_h2, from_h1 = upstream.requests
    scheme = b"https" if kind == "tls" else b"http"
    assert from_h2 == from_h1.replace(b"X-Forwarded-Proto: http", b"X-Forwarded-Proto: " + scheme)
    assert b"\r\nx-name: Jos\xc3\xa9 \xe2\x9c\x93\r\n" in from_h2


@KINDS
async def test_expect_100_continue_is_an_interim_headers_frame(tmp_path: Path, kind: str) -> None:
    """D2: no raw ``HTTP/1.1 100 Continue`` bytes in a DATA frame."""
    async with recording_upstream() as upstream, gateway(tmp_path, upstream) as gw:
        async with client(gw, tmp_path, kind) as conn:
            stream_id = conn.conn.get_next_available_stream_id()
            headers = [*head(kind, b"POST", b"/up"), (b"content-length", b"5"),
                       (b"expect", b"100-continue")]  # fmt: skip
            conn.conn.send_headers(stream_id, headers)
            conn.flush()
            interim = await conn.until(h2.events.InformationalResponseReceived)
            conn.conn.send_data(stream_id, b"hello", end_stream=True)
            conn.flush()
            result = await outcome(conn, stream_id)
    assert dict(interim.headers) == {":status": "100"}
    assert result == ("answer", 200, b"ok")
    assert upstream.requests[0].endswith(b"\r\n\r\nhello")
    assert b"expect" not in upstream.requests[0].lower()


async def test_curl_expect_100_continue_over_h2c_gets_the_answer(tmp_path: Path) -> None:
    async with recording_upstream() as upstream, gateway(tmp_path, upstream) as gw:
        process = await asyncio.create_subprocess_exec(
            "curl", "-s", "--http2-prior-knowledge", "-H", "Expect: 100-continue",
            "--data-binary", "hello", "-w", " %{http_code}", gw.url("/up"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert (process.returncode, out) == (0, b"ok 200"), err
    assert upstream.requests[0].endswith(b"\r\n\r\nhello")
