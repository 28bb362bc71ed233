"""Request heads the request path must see one way: absolute-form, HTTP/0.9, transfer
codings, line limits (fault run F2, F7 and the header-limit finding), on real sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.backends import backends
from tests.support import base_config, in_process_gateway, with_routes


async def exchange(port: int, data: bytes, limit: float = 5.0) -> bytes:
    """Everything the gateway sends back before it closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        async with asyncio.timeout(limit):
            return await reader.read(-1)
    finally:
        writer.close()


def echoed(reply: bytes) -> dict[str, Any]:
    """The backend's echo of what it received (see tests.backends)."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), reply
    echo: dict[str, Any] = json.loads(body)
    echo["headers"] = dict(echo["headers"])
    return echo


def split_hosts_config(tmp_path: Path, upstream: str) -> dict[str, Any]:
    """The fault run's routes: an admin host that refuses, a public host that proxies."""
    return with_routes(
        base_config(tmp_path),
        {"name": "admin", "match": {"hosts": ["admin.example"]},
         "respond": {"status": 403, "body": "admin only\n"}},
        {"name": "public", "match": {"hosts": ["public.example"], "path_prefix": "/pub"},
         "proxy": {"upstreams": [upstream]}},
    )  # fmt: skip


async def test_absolute_form_target_routes_and_forwards_by_its_own_authority(
    tmp_path: Path,
) -> None:
    async with backends("a") as (backend,):
        async with in_process_gateway(split_hosts_config(tmp_path, backend.url), tmp_path) as gw:
            port = gw.ports["public"]
            reply = await exchange(
                port,
                b"GET http://public.example/pub/x?q=%20 HTTP/1.1\r\n"
                b"Host: admin.example\r\nConnection: close\r\n\r\n",
            )
            refused = await exchange(
                port,
                b"GET http://admin.example/pub/x HTTP/1.1\r\n"
                b"Host: public.example\r\nConnection: close\r\n\r\n",
            )
    echo = echoed(reply)
    assert echo["path"] == "/pub/x?q=%20"  # origin-form upstream, bytes as sent
    assert echo["headers"]["Host"] == "public.example"
    assert echo["headers"]["X-Forwarded-Host"] == "public.example"
    assert refused.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert refused.endswith(b"\r\n\r\nadmin only\n")


async def test_absolute_form_keeps_the_port_of_its_authority(tmp_path: Path) -> None:
    async with backends("a") as (backend,):
        config = split_hosts_config(tmp_path, backend.url)
        config["routes"][1]["match"]["hosts"] = ["public.example"]
        async with in_process_gateway(config, tmp_path) as gw:
            reply = await exchange(
                gw.ports["public"],
                b"GET http://public.example:8443/pub HTTP/1.1\r\nHost: x\r\n"
                b"Connection: close\r\n\r\n",
            )
    assert echoed(reply)["headers"]["Host"] == "public.example:8443"


async def test_absolute_form_reaches_a_static_file(tmp_path: Path) -> None:
    root = tmp_path / "site"
    root.mkdir()
    (root / "a.txt").write_bytes(b"file a\n")
    config = with_routes(base_config(tmp_path), {"name": "files", "static": {"root": str(root)}})
    async with in_process_gateway(config, tmp_path) as gw:
        reply = await exchange(
            gw.ports["public"],
            b"GET http://files.example/a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\nfile a\n")


async def test_http09_request_is_refused_with_an_http11_status_line(tmp_path: Path) -> None:
    async with backends("a") as (backend,):
        config = split_hosts_config(tmp_path, backend.url)
        async with in_process_gateway(config, tmp_path) as gw:
            reply = await exchange(
                gw.ports["public"], b"GET /pub/x\r\nHost: public.example\r\n\r\n"
            )
    assert reply.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert b"\r\nConnection: close\r\n" in reply
    assert reply.endswith(b"505 HTTP Version Not Supported: HTTP/0.9 is not supported\n")
    assert backend.hits == 0


async def test_transfer_coding_other_than_chunked_is_501_not_relayed(tmp_path: Path) -> None:
    async with backends("a") as (backend,):
        config = split_hosts_config(tmp_path, backend.url)
        async with in_process_gateway(config, tmp_path) as gw:
            reply = await exchange(
                gw.ports["public"],
                b"POST /pub/x HTTP/1.1\r\nHost: public.example\r\n"
                b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            )
    assert reply.startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    assert b"\r\nConnection: close\r\n" in reply
    assert reply.endswith(b"transfer codings other than chunked are not supported\n")
    assert backend.hits == 0


async def test_connection_naming_host_does_not_take_host_from_the_upstream(
    tmp_path: Path,
) -> None:
    async with backends("a") as (backend,):
        config = split_hosts_config(tmp_path, backend.url)
        async with in_process_gateway(config, tmp_path) as gw:
            reply = await exchange(
                gw.ports["public"],
                b"GET /pub/x HTTP/1.1\r\nHost: public.example\r\nConnection: host, close\r\n\r\n",
            )
    assert echoed(reply)["headers"]["Host"] == "public.example"


async def test_header_line_limit_counts_the_whole_line(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["server"]["limits"] = {"max_header_bytes": 2048}
    async with in_process_gateway(config, tmp_path) as gw:
        port = gw.ports["public"]

        def head(name_len: int, value_len: int) -> bytes:
            line = b"N" * name_len + b": " + b"v" * value_len
            return b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n" + line + b"\r\n\r\n"

        at_limit = await exchange(port, head(1000, 2048 - 1002))
        over = await exchange(port, head(1000, 2048 - 1001))
        long_target = b"GET /" + b"a" * (2048 - 13) + b" HTTP/1.1\r\nHost: h\r\n\r\n"
        line_over = await exchange(port, long_target)
    assert at_limit.startswith(b"HTTP/1.1 200 OK\r\n")
    assert over.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert over.endswith(b"a header line is longer than 2048 bytes\n")
    assert line_over.startswith(b"HTTP/1.1 414 Request-URI Too Long\r\n"), line_over[:80]


async def test_proxy_refuses_paths_a_backend_could_read_as_traversal(tmp_path: Path) -> None:
    async with backends("a") as (backend,):
        config = with_routes(
            base_config(tmp_path),
            {"name": "strict", "match": {"path_prefix": "/app"},
             "proxy": {"upstreams": [backend.url]}},
            {"name": "lenient", "match": {"path_prefix": "/legacy"},
             "proxy": {"upstreams": [backend.url], "strict_paths": False}},
        )  # fmt: skip
        async with in_process_gateway(config, tmp_path) as gw:
            port = gw.ports["public"]
            refused = await exchange(
                port, b"GET /app/..;/admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            )
            assert backend.hits == 0
            passed = await exchange(
                port, b"GET /legacy/..;/admin HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
            )
    assert refused.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert refused.endswith(
        b"dot segment with parameters in path: the upstream could read it as another path\n"
    )
    assert echoed(passed)["path"] == "/legacy/..;/admin"
