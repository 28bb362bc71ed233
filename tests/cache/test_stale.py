"""Stale answers, served only within the windows the answer itself (RFC 5861) or the
route (grace) allows: while one refresh runs, and while the upstream fails; never when
the answer says it must be revalidated."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from tests.cache.origin import Reply
from tests.cache.support import Cached, cached
from tests.client import eventually


def held_back(
    release: asyncio.Event, headers: dict[str, str], body: bytes
) -> Callable[[web.Request], Awaitable[Reply]]:
    async def reply(request: web.Request) -> Reply:
        await release.wait()
        return 200, headers, body

    return reply


def stored(c: Cached, body: bytes) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        cache = c.gw.worker.cache
        assert cache is not None
        return any(entry.body == body for entry in cache.memory.by_url(c.url("/page")[7:]))

    return check


def hits(c: Cached, path: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return c.origin.hits(path) >= count

    return check


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", body=b"v1", Cache_Control="max-age=10, stale-while-revalidate=30")
        await c.get()
        c.clock.advance(15)
        release = asyncio.Event()
        headers = {"Cache-Control": "max-age=10, stale-while-revalidate=30"}
        c.origin.replies["/page"] = held_back(release, headers, b"v2")
        stale = await asyncio.gather(*(c.get() for _ in range(10)))  # the refresh waits
        release.set()
        await eventually(stored(c, b"v2"), "one background refresh stored v2")
        refreshed = await c.get()
    assert {(s[0], s[2], s[1]["Cache-Status"]) for s in stale} == {
        (200, b"v1", "edge-gateway; hit; ttl=-5; detail=stale-while-revalidate")
    }
    assert (refreshed[2], refreshed[1]["Cache-Status"]) == (b"v2", "edge-gateway; hit; ttl=10")
    assert c.origin.hits("/page") == 2


async def test_past_the_stale_while_revalidate_window_the_client_waits(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", body=b"v1", Cache_Control="max-age=10, stale-while-revalidate=30")
        await c.get()
        c.clock.advance(41)
        c.origin.answer("/page", body=b"v2", Cache_Control="max-age=10")
        late = await c.get()
    assert late[2] == b"v2"
    assert late[1]["Cache-Status"].startswith("edge-gateway; fwd=stale; fwd-status=200")


def reset(request: web.Request) -> None:
    assert request.transport is not None
    request.transport.abort()  # the gateway sees its connection reset: a 502
    raise ConnectionResetError


@pytest.mark.parametrize("failure", ["500", "reset"])
async def test_stale_if_error_serves_stale_when_the_upstream_fails(
    tmp_path: Path, failure: str
) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", body=b"v1", Cache_Control="max-age=10, stale-if-error=60")
        await c.get()
        c.clock.advance(20)
        if failure == "500":
            c.origin.answer("/page", status=500, body=b"broken")
        else:
            c.origin.replies["/page"] = reset
        answer = await c.get()
    assert (answer[0], answer[2]) == (200, b"v1")
    expected = (
        "edge-gateway; fwd=stale; fwd-status=500"
        if failure == "500"
        else ("edge-gateway; fwd=stale")
    )
    assert answer[1]["Cache-Status"].startswith(expected)
    assert answer[1]["Cache-Status"].endswith("detail=stale-if-error")


@pytest.mark.parametrize(
    "cache_control",
    ["max-age=10, stale-if-error=60, must-revalidate", "s-maxage=10, stale-if-error=60",
     "max-age=10, stale-if-error=60, proxy-revalidate"],
    ids=["must-revalidate", "s-maxage", "proxy-revalidate"],
)  # fmt: skip
async def test_an_answer_that_must_be_revalidated_is_never_served_stale(
    tmp_path: Path, cache_control: str
) -> None:
    async with cached(tmp_path, grace=600) as c:
        c.origin.answer("/page", body=b"v1", Cache_Control=cache_control)
        await c.get()
        c.clock.advance(20)
        c.origin.answer("/page", status=503, body=b"down")
        answer = await c.get(Cache_Control="max-stale")
    assert (answer[0], answer[2]) == (503, b"down")


async def test_the_routes_grace_serves_stale_while_the_upstream_is_down(tmp_path: Path) -> None:
    async with cached(tmp_path, grace=300) as c:
        c.origin.answer("/page", body=b"v1", Cache_Control="max-age=10")
        await c.get()
        c.clock.advance(200)
        c.origin.answer("/page", status=502, body=b"bad gateway")
        within = await c.get()
        c.clock.advance(200)
        past = await c.get()
    assert (within[0], within[2]) == (200, b"v1")
    assert (past[0], past[2]) == (502, b"bad gateway")
