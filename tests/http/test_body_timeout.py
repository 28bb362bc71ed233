"""Request bodies that stall or trickle are cut with 408 (fault run F4), on every handler
that reads a body, and the request's concurrency slot comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.backends import recording_backend
from tests.client import happens
from tests.support import base_config, in_process_gateway, with_routes


def config_with(tmp_path: Path, route: dict[str, Any], **limits: Any) -> dict[str, Any]:
    config = with_routes(base_config(tmp_path), route)
    config["server"]["timeouts"] = {"read_body": 0.5}
    config["server"]["limits"] = {"max_concurrent_requests": 1, "min_body_rate": 0, **limits}
    config["tracking"] = {"delivery": "fast"}
    return config


async def trickle(port: int, head: bytes, *, every: float, limit: float = 5.0) -> bytes:
    """Send ``head``, then one body byte every ``every`` seconds until the gateway answers
    and closes; what it sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = b""
    try:
        async with asyncio.timeout(limit):
            while True:
                try:
                    chunk = await asyncio.wait_for(reader.read(65536), every)
                except TimeoutError:
                    writer.write(b"x")
                    continue
                if not chunk:
                    return answer
                answer += chunk
    finally:
        writer.close()


HEAD = b"POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\nx"


async def test_a_stalled_body_is_408_and_frees_its_slot(tmp_path: Path) -> None:
    config = config_with(tmp_path, {"name": "collect", "collect": {}})
    async with in_process_gateway(config, tmp_path) as gw:
        port = gw.ports["public"]
        answer = await trickle(port, HEAD % b"/tr/v1", every=10.0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /tr/v1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}")
        after = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b"\r\nConnection: close\r\n" in answer
    assert answer.endswith(b"408 Request Timeout: request body stalled: no byte in 0.5 s\n")
    assert after.startswith(b"HTTP/1.1 204 No Content\r\n")


async def test_a_trickled_body_under_the_minimum_rate_is_408(tmp_path: Path) -> None:
    config = config_with(tmp_path, {"name": "collect", "collect": {}}, min_body_rate=100)
    async with in_process_gateway(config, tmp_path) as gw:
        answer = await trickle(gw.ports["public"], HEAD % b"/tr/v1", every=0.1)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert answer.endswith(b"request body slower than 100 bytes/s\n")


async def test_a_segment_body_that_stalls_is_408(tmp_path: Path) -> None:
    config = config_with(tmp_path, {"name": "segment", "match": {"path_prefix": "/v1"},
                                    "segment": {}})  # fmt: skip
    config["tracking"]["write_keys"] = ["wk"]
    async with in_process_gateway(config, tmp_path) as gw:
        answer = await trickle(gw.ports["public"], HEAD % b"/v1/track", every=10.0)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    ids=["upstream_waiting", "upstream_answered_early"],
)
async def test_a_proxied_body_that_stalls_is_408_and_the_upstream_connection_closed(
    tmp_path: Path, answer: bytes
) -> None:
    """The upstream request is aborted: its connection is closed while the gateway goes
    on serving, never kept for another request with half a body in it (an upstream that
    answered early leaves a connection that looks reusable)."""
    async with recording_backend(answer) as (url, upstream):
        route = {"name": "app", "proxy": {"upstreams": [url]}}
        async with in_process_gateway(config_with(tmp_path, route), tmp_path) as gw:
            reply = await trickle(gw.ports["public"], HEAD % b"/upload", every=10.0)
            await happens(upstream.hung_up, "the gateway closes its upstream connection")
    assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    (sent,) = upstream.received
    assert sent.startswith(b"POST /upload HTTP/1.1\r\n")
    assert sent.endswith(b"\r\nContent-Length: 1000\r\n\r\nx")  # the head, one body byte


async def test_a_body_that_keeps_coming_is_not_cut(tmp_path: Path) -> None:
    config = config_with(tmp_path, {"name": "collect", "collect": {}})
    async with in_process_gateway(config, tmp_path) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.ports["public"])
        writer.write(b"POST /tr/v1 HTTP/1.1\r\nHost: h\r\nContent-Length: 15\r\n\r\n")
        for piece in (b'{"a":', b'"b",', b'"c":1}'):
            await asyncio.sleep(0.3)  # under read_body each time, 1.2 s in all
            writer.write(piece)
        head = await reader.readuntil(b"\r\n\r\n")
        writer.close()
    assert head.startswith(b"HTTP/1.1 204 No Content\r\n")
