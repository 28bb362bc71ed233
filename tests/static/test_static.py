"""Static files: byte-exact bodies, HTTP semantics, compression, cache, and path safety."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import cramjam
import pytest

from gateway.handlers.static import StaticHandler
from tests.client import fetch
from tests.support import base_config, in_process_gateway, with_routes

HTML = b"<!doctype html><title>home</title>\n"
TEXT = b"0123456789abcdefghij"  # 20 bytes: easy ranges


def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_bytes(HTML)
    (root / "docs" / "index.html").write_bytes(b"docs index\n")
    (root / "a.txt").write_bytes(TEXT)
    (root / "app.js").write_bytes(b"console.log(1);\n" * 200)
    (root / "app.js.br").write_bytes(bytes(cramjam.brotli.compress((root / "app.js").read_bytes())))
    (root / "app.js.gz").write_bytes(gzip.compress((root / "app.js").read_bytes()))
    (root / "big.css").write_bytes(b"body { color: red; }\n" * 500)
    (root / ".env").write_bytes(b"SECRET=1")
    return root


def static_config(tmp_path: Path, root: Path, **static: Any) -> dict[str, Any]:
    route = {"name": "files", "static": {"root": str(root), **static}}
    return with_routes(base_config(tmp_path), route)


async def test_file_bytes_and_headers(tmp_path: Path) -> None:
    root = site(tmp_path)
    async with in_process_gateway(static_config(tmp_path, root), tmp_path) as gw:
        status, headers, body = await fetch(gw.url("/a.txt"))
    assert (status, body) == (200, TEXT)
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Accept-Ranges"] == "bytes"
    stat = os.stat(root / "a.txt")
    assert headers["ETag"] == f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
    assert headers["Last-Modified"].endswith(" GMT")


async def test_index_and_directory_redirect(tmp_path: Path) -> None:
    async with in_process_gateway(static_config(tmp_path, site(tmp_path)), tmp_path) as gw:
        assert (await fetch(gw.url("/")))[::2] == (200, HTML)
        assert (await fetch(gw.url("/docs/")))[::2] == (200, b"docs index\n")
        status, headers, _ = await fetch(gw.url("/docs?x=1"))
    assert (status, headers["Location"]) == (308, "/docs/?x=1")


async def test_conditional_requests(tmp_path: Path) -> None:
    async with in_process_gateway(static_config(tmp_path, site(tmp_path)), tmp_path) as gw:
        _, headers, _ = await fetch(gw.url("/a.txt"))
        etag, modified = headers["ETag"], headers["Last-Modified"]
        assert (await fetch(gw.url("/a.txt"), headers={"If-None-Match": etag}))[0] == 304
        assert (await fetch(gw.url("/a.txt"), headers={"If-None-Match": f"W/{etag}"}))[0] == 304
        assert (await fetch(gw.url("/a.txt"), headers={"If-Modified-Since": modified}))[0] == 304
        assert (await fetch(gw.url("/a.txt"), headers={"If-Match": '"other"'}))[0] == 412
        old = "Mon, 01 Jan 2001 00:00:00 GMT"
        assert (await fetch(gw.url("/a.txt"), headers={"If-Unmodified-Since": old}))[0] == 412
        status, _, body = await fetch(gw.url("/a.txt"), headers={"If-Match": etag})
    assert (status, body) == (200, TEXT)


async def test_single_suffix_and_unsatisfiable_ranges(tmp_path: Path) -> None:
    async with in_process_gateway(static_config(tmp_path, site(tmp_path)), tmp_path) as gw:
        status, headers, body = await fetch(gw.url("/a.txt"), headers={"Range": "bytes=2-5"})
        assert (status, body, headers["Content-Range"]) == (206, b"2345", "bytes 2-5/20")
        status, headers, body = await fetch(gw.url("/a.txt"), headers={"Range": "bytes=-3"})
        assert (status, body, headers["Content-Range"]) == (206, b"hij", "bytes 17-19/20")
        status, headers, _ = await fetch(gw.url("/a.txt"), headers={"Range": "bytes=50-60"})
        assert (status, headers["Content-Range"]) == (416, "bytes */20")
        status, _, body = await fetch(gw.url("/a.txt"), headers={"Range": "lines=1-2"})
        assert (status, body) == (200, TEXT)


async def test_multiple_ranges_are_multipart(tmp_path: Path) -> None:
    async with in_process_gateway(static_config(tmp_path, site(tmp_path)), tmp_path) as gw:
        status, headers, body = await fetch(gw.url("/a.txt"), headers={"Range": "bytes=0-1,10-12"})
    assert status == 206
    kind, _, boundary = headers["Content-Type"].partition("; boundary=")
    assert kind == "multipart/byteranges"
    boundary = boundary.strip('"')
    assert (
        body
        == (
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Range: bytes 0-1/20\r\nContent-Length: 2\r\n\r\n01\r\n"
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Range: bytes 10-12/20\r\nContent-Length: 3\r\n\r\nabc\r\n"
            f"--{boundary}--\r\n"
        ).encode()
    )


async def test_more_than_16_ranges_are_ignored_for_a_whole_200(tmp_path: Path) -> None:
    ranges = [f"{i}-{i}" for i in range(17)]
    async with in_process_gateway(static_config(tmp_path, site(tmp_path)), tmp_path) as gw:
        sixteen = await fetch(gw.url("/a.txt"), headers={"Range": "bytes=" + ",".join(ranges[:16])})
        seventeen = await fetch(gw.url("/a.txt"), headers={"Range": "bytes=" + ",".join(ranges)})
    assert sixteen[0] == 206
    assert sixteen[1]["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert sixteen[2].count(b"\r\nContent-Range: bytes ") == 16
    status, headers, body = seventeen
    assert (status, body, headers["Content-Type"]) == (200, TEXT, "text/plain; charset=utf-8")
    assert "Content-Range" not in headers


async def test_a_range_a_file_past_the_cache_cannot_take_is_ignored_for_a_whole_200(
    tmp_path: Path,
) -> None:
    root = site(tmp_path)
    data = bytes(range(256)) * 1000
    (root / "large.bin").write_bytes(data)
    config = static_config(tmp_path, root, cache={"max_file_bytes": 100_000})
    async with in_process_gateway(config, tmp_path) as gw:
        answers = [
            await fetch(gw.url("/large.bin"), headers={"Range": value})
            for value in ("bytes=0-1,10-12", "lines=1-2", "bytes=3-4")
        ]
    # aiohttp's FileResponse takes one byte range and answered 416 to the others; the
    # gateway ignores what it cannot take (RFC 9110 §14.2), as cached files do.
    assert [(status, body) for status, _, body in answers] == [
        (200, data), (200, data), (206, data[3:5]),
    ]  # fmt: skip


async def test_if_range(tmp_path: Path) -> None:
    async with in_process_gateway(static_config(tmp_path, site(tmp_path)), tmp_path) as gw:
        etag = (await fetch(gw.url("/a.txt")))[1]["ETag"]
        partial = {"Range": "bytes=0-0", "If-Range": etag}
        assert (await fetch(gw.url("/a.txt"), headers=partial))[::2] == (206, b"0")
        stale = {"Range": "bytes=0-0", "If-Range": '"stale"'}
        assert (await fetch(gw.url("/a.txt"), headers=stale))[::2] == (200, TEXT)


async def test_head_has_headers_and_no_body(tmp_path: Path) -> None:
    async with in_process_gateway(static_config(tmp_path, site(tmp_path)), tmp_path) as gw:
        status, headers, body = await fetch(gw.url("/a.txt"), "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", "20")


async def test_precompressed_sidecars_by_accept_encoding(tmp_path: Path) -> None:
    root = site(tmp_path)
    original = (root / "app.js").read_bytes()
    async with in_process_gateway(static_config(tmp_path, root), tmp_path) as gw:
        _, br_headers, br = await fetch(gw.url("/app.js"), headers={"Accept-Encoding": "gzip, br"})
        _, gz_headers, gz = await fetch(gw.url("/app.js"), headers={"Accept-Encoding": "gzip"})
        _, id_headers, plain = await fetch(gw.url("/app.js"), headers={"Accept-Encoding": "br;q=0"})
    assert br_headers["Content-Encoding"] == "br" and br == (root / "app.js.br").read_bytes()
    assert gz_headers["Content-Encoding"] == "gzip" and gzip.decompress(gz) == original
    assert "Content-Encoding" not in id_headers and plain == original
    assert br_headers["Vary"] == gz_headers["Vary"] == id_headers["Vary"] == "Accept-Encoding"
    assert len({br_headers["ETag"], gz_headers["ETag"], id_headers["ETag"]}) == 3
    assert br_headers["Content-Type"] == "text/javascript; charset=utf-8"  # RFC 9239


async def test_on_the_fly_compression_of_text(tmp_path: Path) -> None:
    root = site(tmp_path)
    async with in_process_gateway(static_config(tmp_path, root), tmp_path) as gw:
        _, headers, body = await fetch(gw.url("/big.css"), headers={"Accept-Encoding": "zstd"})
        _, gz_headers, gz = await fetch(gw.url("/big.css"), headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "zstd"
    assert bytes(cramjam.zstd.decompress(body)) == (root / "big.css").read_bytes()
    assert gz_headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(gz) == (root / "big.css").read_bytes()


async def test_cache_control_by_glob(tmp_path: Path) -> None:
    rules = [{"glob": "*.js", "value": "public, max-age=31536000, immutable"},
             {"glob": "*.html", "value": "no-cache"}]  # fmt: skip
    config = static_config(tmp_path, site(tmp_path), cache_control=rules)
    async with in_process_gateway(config, tmp_path) as gw:
        assert (await fetch(gw.url("/app.js")))[1]["Cache-Control"] == rules[0]["value"]
        assert (await fetch(gw.url("/")))[1]["Cache-Control"] == "no-cache"
        assert "Cache-Control" not in (await fetch(gw.url("/a.txt")))[1]


async def test_cache_serves_memory_until_the_check_interval(tmp_path: Path) -> None:
    root = site(tmp_path)
    now = [1000.0]
    config = static_config(tmp_path, root, cache={"check_interval": 10})
    async with in_process_gateway(config, tmp_path) as gw:
        route = gw.worker.holder.current.router.match("x", "/")
        assert route is not None and isinstance(route.handler, StaticHandler)
        route.handler.cache.clock = lambda: now[0]
        assert (await fetch(gw.url("/a.txt")))[2] == TEXT
        replacement = root / "a.txt.new"
        replacement.write_bytes(b"new content")
        os.replace(replacement, root / "a.txt")
        now[0] += 9
        assert (await fetch(gw.url("/a.txt")))[2] == TEXT  # still the cached copy
        now[0] += 1  # checked 10 s ago: looked at again
        assert (await fetch(gw.url("/a.txt")))[2] == b"new content"
        _, _, metrics = await fetch(gw.url("/_gateway/metrics", listener="admin"))
    text = metrics.decode()
    assert 'gateway_static_cache_total{event="hit"} 1.0' in text
    assert 'gateway_static_cache_total{event="miss"} 2.0' in text


async def test_cache_stays_within_its_byte_bound(tmp_path: Path) -> None:
    root = site(tmp_path)
    for i in range(10):
        (root / f"f{i}.bin").write_bytes(bytes([i]) * 1000)
    config = static_config(tmp_path, root, cache={"max_bytes": 3500})
    async with in_process_gateway(config, tmp_path) as gw:
        for i in range(10):
            assert (await fetch(gw.url(f"/f{i}.bin")))[2] == bytes([i]) * 1000
        handler = gw.worker.holder.current.router.match("x", "/").handler  # type: ignore[union-attr]
        assert handler.cache.bytes <= 3500 and len(handler.cache) == 3
        _, _, metrics = await fetch(gw.url("/_gateway/metrics", listener="admin"))
    assert 'gateway_static_cache_total{event="eviction"} 7.0' in metrics.decode()
    assert "gateway_static_cache_bytes 3000.0" in metrics.decode()


async def test_large_file_streams_from_disk_with_ranges(tmp_path: Path) -> None:
    root = site(tmp_path)
    data = os.urandom(300_000)
    (root / "large.bin").write_bytes(data)
    config = static_config(tmp_path, root, cache={"max_file_bytes": 100_000})
    async with in_process_gateway(config, tmp_path) as gw:
        assert (await fetch(gw.url("/large.bin")))[::2] == (200, data)
        status, _, body = await fetch(gw.url("/large.bin"), headers={"Range": "bytes=1000-1999"})
    assert (status, body) == (206, data[1000:2000])


async def test_spa_fallback_and_listing(tmp_path: Path) -> None:
    root = site(tmp_path)
    (root / "empty").mkdir()
    (root / "empty" / "<b>.txt").write_bytes(b"x")
    (root / "empty" / "javascript:alert(1)").write_bytes(b"x")
    config = static_config(tmp_path, root, spa_fallback="index.html", listing=True)
    async with in_process_gateway(config, tmp_path) as gw:
        assert (await fetch(gw.url("/app/route/42")))[::2] == (200, HTML)
        status, _, body = await fetch(gw.url("/empty/"))
    assert status == 200
    assert b'<a href="./%3Cb%3E.txt">&lt;b&gt;.txt</a>' in body
    assert b'<a href="./javascript%3Aalert%281%29">javascript:alert(1)</a>' in body


async def test_listing_is_off_by_default_and_methods_limited(tmp_path: Path) -> None:
    root = site(tmp_path)
    (root / "empty").mkdir()
    async with in_process_gateway(static_config(tmp_path, root), tmp_path) as gw:
        assert (await fetch(gw.url("/empty/")))[0] == 404
        status, headers, _ = await fetch(gw.url("/a.txt"), "POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")


DOTS = (400, b"400 Bad Request: dot segments are not allowed in paths\n")  # before routing
SLASH = (400, b"400 Bad Request: encoded slashes are not allowed in paths\n")
CONTROL = (400, b"400 Bad Request: control characters or backslashes in path\n")
UTF8 = (400, b"400 Bad Request: path is not valid UTF-8\n")
MISSING = (404, b"404 Not Found: not found\n")
HOSTILE = {
    "/../secret.txt": DOTS,
    "/..%2fsecret.txt": DOTS,
    "/%2e%2e/secret.txt": DOTS,
    "/%2e%2e%2fsecret.txt": DOTS,
    "/..%5csecret.txt": SLASH,
    "/..\\secret.txt": CONTROL,
    "/%252e%252e/secret.txt": MISSING,  # decoded once: a name "%2e%2e", not there
    "/docs/../../secret.txt": DOTS,
    "/docs/%2e%2e/%2e%2e/secret.txt": DOTS,
    "/%c0%ae%c0%ae/secret.txt": UTF8,  # overlong "."
    "/%c0%af../secret.txt": UTF8,  # overlong "/"
    "/a.txt%00.html": CONTROL,
    "/secret.txt%00": CONTROL,
    "//etc/passwd": MISSING,
    "/%2fetc%2fpasswd": SLASH,
    "/.%2e/secret.txt": DOTS,
    "/docs/..;/../secret.txt": DOTS,
    "/escape/secret.txt": MISSING,  # a symlink out of the root
    "/.env": MISSING,  # hidden
    "/docs/.%2e/.%2e/secret.txt": DOTS,
    "/%ef%bc%8e%ef%bc%8e/secret.txt": MISSING,  # fullwidth dots: a name like any other
    "/" + "a/" * 2000 + "x": (414, b"414 Request-URI Too Long: path too deep\n"),
    "/" + "x" * 5000: (414, b"414 Request-URI Too Long: path too long\n"),
    "/%": MISSING,  # a lone "%" is taken as itself
    "/%zz": MISSING,
    "/escape": MISSING,
    "/escape/": MISSING,
}


async def test_no_byte_outside_the_root_is_ever_served(tmp_path: Path) -> None:
    root = site(tmp_path)
    (tmp_path / "secret.txt").write_bytes(b"TOP-SECRET")
    (root / "escape").symlink_to(tmp_path)  # a symlink out of the root
    async with in_process_gateway(static_config(tmp_path, root), tmp_path) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
        answers = {}
        for path in HOSTILE:
            # Raw request lines: a client library would normalise the very tricks tested.
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            answers[path] = (int(head.split()[1]), await reader.readexactly(length))
            if b"Connection: close" in head:
                writer.close()
                await writer.wait_closed()
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
        writer.close()
        await writer.wait_closed()
    assert answers == HOSTILE


async def test_sidecar_symlinked_out_of_the_root_is_not_served(tmp_path: Path) -> None:
    root = site(tmp_path)
    (tmp_path / "outside.gz").write_bytes(gzip.compress(b"TOP-SECRET"))
    (root / "a.txt.gz").symlink_to(tmp_path / "outside.gz")
    async with in_process_gateway(static_config(tmp_path, root), tmp_path) as gw:
        _, headers, body = await fetch(gw.url("/a.txt"), headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in headers and body == TEXT


async def test_hidden_files_when_allowed(tmp_path: Path) -> None:
    root = site(tmp_path)
    (root / ".well-known").mkdir()
    (root / ".well-known" / "security.txt").write_bytes(b"Contact: x\n")
    config = static_config(tmp_path, root, allow_hidden=True)
    async with in_process_gateway(config, tmp_path) as gw:
        assert (await fetch(gw.url("/.well-known/security.txt")))[::2] == (200, b"Contact: x\n")


async def test_concurrent_requests_during_rewrites_see_whole_versions(tmp_path: Path) -> None:
    root = site(tmp_path)
    versions = [bytes([65 + i]) * (5000 + i) for i in range(4)]
    config = static_config(tmp_path, root, cache={"check_interval": 0})
    async with in_process_gateway(config, tmp_path) as gw:
        stop = asyncio.Event()

        started = asyncio.Event()

        async def rewrite() -> None:
            i = 0
            while not stop.is_set():
                temp = root / "v.tmp"
                temp.write_bytes(versions[i % 4])
                os.replace(temp, root / "v.txt")
                started.set()
                i += 1
                await asyncio.sleep(0.001)  # a writer that keeps on, leaving room to read

        writer = asyncio.ensure_future(rewrite())
        await started.wait()
        async with aiohttp.ClientSession() as session:

            async def one() -> bytes:
                async with session.get(gw.url("/v.txt")) as resp:
                    assert resp.status == 200
                    return await resp.read()

            bodies = await asyncio.gather(*(one() for _ in range(200)))
        stop.set()
        await writer
    assert all(body in versions for body in bodies)


@pytest.mark.parametrize("root", ["/definitely/not/here"])
def test_missing_root_is_a_config_error(tmp_path: Path, root: str) -> None:
    from gateway.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(static_config(tmp_path, Path(root))).encode(), env={})
    assert [str(i) for i in caught.value.issues] == [
        f"routes[0].static.root: '{root}' is not a directory"
    ]


async def test_cache_bytes_are_released_when_a_reload_replaces_the_route(tmp_path: Path) -> None:
    root = site(tmp_path)
    config = static_config(tmp_path, root)
    async with in_process_gateway(config, tmp_path) as gw:
        assert (await fetch(gw.url("/a.txt")))[2] == TEXT
        gw.config_path.write_text(json.dumps(config))
        assert await gw.worker.reload() == []
        _, _, metrics = await fetch(gw.url("/_gateway/metrics", listener="admin"))
    assert "gateway_static_cache_bytes 0.0" in metrics.decode()
