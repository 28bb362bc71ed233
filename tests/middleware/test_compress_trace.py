"""Compression through a real streaming upstream (each encoding round-tripped, bounded
memory, the cases never compressed) and W3C trace context end to end."""

from __future__ import annotations

import contextlib
import json
import re
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import cramjam
import pytest
from aiohttp import web

from gateway.middleware.trace import parse_traceparent
from tests.backends import backends, serving
from tests.client import fetch
from tests.middleware.test_headers_access_auth import upstream_saw
from tests.support import base_config, in_process_gateway, with_routes

DOC = json.dumps([{"id": i, "name": f"item {i}", "tags": ["a", "b"]} for i in range(200)]).encode()
DECODE = {"gzip": cramjam.gzip.decompress, "br": cramjam.brotli.decompress,
          "zstd": cramjam.zstd.decompress}  # fmt: skip


@contextlib.asynccontextmanager
async def json_upstream() -> AsyncIterator[str]:
    async def doc(request: web.Request) -> web.Response:
        return web.Response(body=DOC, content_type="application/json", headers={"ETag": '"v1"'})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        for i in range(int(request.query.get("n", "64"))):
            await response.write(b"line %06d " % i * 6000 + b"\n")  # 72 KB a write
        return response

    async def special(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        headers = {
            "encoded": {"Content-Encoding": "gzip"},
            "notransform": {"Cache-Control": "public, no-transform"},
            "image": {"Content-Type": "image/png"},
        }.get(kind, {})
        body = DOC[:100] if kind == "small" else DOC
        return web.Response(body=body, headers={"Content-Type": "application/json", **headers})

    app = web.Application()
    app.router.add_get("/doc", doc)
    app.router.add_get("/stream", stream)
    app.router.add_get("/special/{kind}", special)
    async with serving(app) as url:
        yield url


def compress_config(tmp_path: Path, upstream: str) -> dict[str, object]:
    return with_routes(
        base_config(tmp_path),
        {"name": "hello", "match": {"path_prefix": "/hello"}, "compress": {"min_bytes": 10},
         "respond": {"body": "hello " * 100}},
        {"name": "app", "compress": {}, "proxy": {"upstreams": [upstream]}},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("accept", "coding"),
    [("gzip", "gzip"), ("br;q=1, gzip;q=0.8", "br"), ("zstd, br, gzip", "zstd"),
     ("gzip, deflate, br, zstd", "zstd"), ("*", "zstd"), ("br;q=0, *;q=0.5", "zstd")],
)  # fmt: skip
async def test_each_encoding_round_trips_whole_and_streamed(
    tmp_path: Path, accept: str, coding: str
) -> None:
    async with json_upstream() as upstream:
        async with in_process_gateway(compress_config(tmp_path, upstream), tmp_path) as gw:
            whole = await fetch(gw.url("/doc"), headers={"Accept-Encoding": accept})
            streamed = await fetch(gw.url("/stream?n=8"), headers={"Accept-Encoding": accept})
            hello = await fetch(gw.url("/hello"), headers={"Accept-Encoding": accept})
    expected_stream = b"".join(b"line %06d " % i * 6000 + b"\n" for i in range(8))
    for (status, headers, body), original in (
        (whole, DOC), (streamed, expected_stream), (hello, b"hello " * 100)
    ):  # fmt: skip
        assert (status, headers["Content-Encoding"], headers["Vary"]) == (
            200, coding, "Accept-Encoding"
        )  # fmt: skip
        assert bytes(DECODE[coding](body)) == original
        assert len(body) < len(original) / 3
    assert whole[1]["ETag"] == 'W/"v1"'  # other bytes: no longer a strong validator
    assert int(whole[1]["Content-Length"]) == len(whole[2])
    assert streamed[1]["Transfer-Encoding"] == "chunked" and "Content-Length" not in streamed[1]


async def test_what_is_never_compressed(tmp_path: Path) -> None:
    async with json_upstream() as upstream:
        async with in_process_gateway(compress_config(tmp_path, upstream), tmp_path) as gw:
            gzip = {"Accept-Encoding": "gzip"}
            identity = await fetch(gw.url("/doc"), headers={"Accept-Encoding": "identity"})
            refused = await fetch(gw.url("/doc"), headers={"Accept-Encoding": "gzip;q=0, br;q=0"})
            encoded = await fetch(gw.url("/special/encoded"), headers=gzip)
            no_transform = await fetch(gw.url("/special/notransform"), headers=gzip)
            image = await fetch(gw.url("/special/image"), headers=gzip)
            small = await fetch(gw.url("/special/small"), headers=gzip)
            head = await fetch(gw.url("/doc"), "HEAD", headers=gzip)
    for status, headers, body in (identity, refused):
        assert (status, body, headers["Vary"], headers["ETag"]) == (
            200, DOC, "Accept-Encoding", '"v1"'
        )  # fmt: skip
        assert "Content-Encoding" not in headers
    assert (encoded[1]["Content-Encoding"], encoded[2]) == ("gzip", DOC)  # the upstream's own
    for status, headers, body in (no_transform, image, small):
        assert status == 200 and "Content-Encoding" not in headers and body in (DOC, DOC[:100])
    assert "Vary" not in image[1] and "Vary" not in no_transform[1]
    assert small[1]["Vary"] == "Accept-Encoding"  # another client's answer may be compressed
    assert "Content-Encoding" not in head[1] and head[2] == b""


async def test_a_large_stream_is_compressed_in_bounded_memory(tmp_path: Path) -> None:
    async with json_upstream() as upstream:
        async with in_process_gateway(compress_config(tmp_path, upstream), tmp_path) as gw:
            decompressor = zlib.decompressobj(wbits=31)  # gzip, streamed
            received = decoded = 0
            tracemalloc.start()
            try:
                async with (
                    aiohttp.ClientSession(auto_decompress=False) as session,
                    session.get(gw.url("/stream?n=160"), headers={"Accept-Encoding": "gzip"}) as r,
                ):
                    async for chunk in r.content.iter_any():
                        received += len(chunk)
                        decoded += len(decompressor.decompress(chunk))
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert r.headers["Content-Encoding"] == "gzip" and decompressor.eof
    assert decoded == 160 * 72_001  # 11.5 MB of text, every byte
    assert 0 < received < decoded / 20
    assert peak < 4 << 20, f"peak {peak}: an 11.5 MB answer was buffered"


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


async def test_trace_context_is_continued_or_started_and_passed_upstream(tmp_path: Path) -> None:
    async with backends("a") as (a,):
        config = with_routes(
            base_config(tmp_path), {"name": "app", "proxy": {"upstreams": [a.url]}}
        )
        async with in_process_gateway(config, tmp_path) as gw:
            continued = await fetch(gw.url("/"), headers={"traceparent": PARENT,
                                                          "tracestate": "vendor=x"})  # fmt: skip
            started = await fetch(gw.url("/"), headers={"traceparent": "00-" + "0" * 32 + "-1-01"})
            log = gw.access_log()
    upstream = upstream_saw(continued[2])
    version, trace_id, span, flags = upstream["traceparent"][0].split("-")
    assert (version, trace_id, flags) == ("00", TRACE, "01")
    assert span != "00f067aa0ba902b7" and re.fullmatch("[0-9a-f]{16}", span)
    assert upstream["tracestate"] == ["vendor=x"]
    new = upstream_saw(started[2])["traceparent"][0].split("-")
    assert new[1] != "0" * 32 and re.fullmatch("[0-9a-f]{32}", new[1]) and new[3] == "01"
    assert "tracestate" not in upstream_saw(started[2])
    assert [r["trace_id"] for r in log] == [TRACE, new[1]]


@pytest.mark.parametrize(
    ("trace_context", "trusted", "kept"),
    [({"accept": "none"}, [], False), ({"accept": "trusted"}, [], False),
     ({"accept": "trusted"}, ["127.0.0.1/32"], True), ({"enabled": False}, [], True)],
)  # fmt: skip
async def test_whose_traceparent_is_believed(
    tmp_path: Path, trace_context: dict[str, object], trusted: list[str], kept: bool
) -> None:
    async with backends("a") as (a,):
        config = with_routes(
            base_config(tmp_path, trace_context=trace_context, trusted_proxies=trusted),
            {"name": "app", "proxy": {"upstreams": [a.url]}},
        )
        async with in_process_gateway(config, tmp_path) as gw:
            _, _, body = await fetch(gw.url("/"), headers={"traceparent": PARENT})
            log = gw.access_log()
    sent = upstream_saw(body)["traceparent"][0]
    assert (TRACE in sent) is kept
    if trace_context.get("enabled") is False:
        assert sent == PARENT and "trace_id" not in log[0]  # passed through untouched


@pytest.mark.parametrize(
    ("header", "parsed"),
    [(PARENT, (TRACE, "01")),
     (f" 00-{TRACE}-00f067aa0ba902b7-00 ", (TRACE, "00")),
     (f"cc-{TRACE}-00f067aa0ba902b7-01-future", (TRACE, "01")),  # a later version
     (f"cc-{TRACE}-00f067aa0ba902b7-01x", None),
     (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),  # version 00 has nothing after
     (f"ff-{TRACE}-00f067aa0ba902b7-01", None),
     (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
     (f"00-{TRACE}-{'0' * 16}-01", None),
     (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
     ("00-abc-def-01", None), ("", None)],
)  # fmt: skip
def test_traceparent_parsing_follows_the_w3c_rules(
    header: str, parsed: tuple[str, str] | None
) -> None:
    assert parse_traceparent(header) == parsed
