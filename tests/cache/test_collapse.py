"""Request collapsing: a herd of misses makes one upstream request, an answer that cannot
be shared lets the herd go at once, and a slow fill makes waiters fetch for themselves
once their wait is over."""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.cache.origin import Reply
from tests.cache.support import Cached, cached
from tests.client import eventually, fetch


async def herd(c: Cached, path: str, count: int) -> list[tuple[int, str, bytes]]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> tuple[int, str, bytes]:
            async with session.get(c.url(path)) as resp:
                return resp.status, resp.headers.get("Cache-Status", ""), await resp.read()

        return await asyncio.gather(*(one() for _ in range(count)))


def held_back(
    release: asyncio.Event, headers: dict[str, str]
) -> Callable[[web.Request], Awaitable[Reply]]:
    """An origin answer that waits until the test lets it go."""

    async def reply(request: web.Request) -> Reply:
        await release.wait()
        return 200, headers, b"the page"

    return reply


def waiting(c: Cached, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        assert c.gw.worker.cache is not None
        return c.gw.worker.cache.collapser.waiting() == count

    return check


async def test_a_herd_of_1000_cold_misses_makes_exactly_one_upstream_request(
    tmp_path: Path,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    release = asyncio.Event()
    try:
        async with cached(tmp_path, collapse_timeout=60) as c:
            c.origin.replies["/cold"] = held_back(release, {"Cache-Control": "max-age=60"})
            served = asyncio.ensure_future(herd(c, "/cold", 1000))
            await eventually(waiting(c, 999), "999 requests wait for the first one's", 30)
            release.set()
            answers = await served
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert c.origin.hits("/cold") == 1
    assert {(status, body) for status, _, body in answers} == {(200, b"the page")}
    statuses = [cache_status for _, cache_status, _ in answers]
    assert statuses.count("edge-gateway; hit; ttl=60; collapsed") == 999


async def test_an_answer_that_cannot_be_shared_releases_the_waiters_at_once(
    tmp_path: Path,
) -> None:
    """The waiters would wait 600 s for a stored answer; they go upstream themselves as
    soon as the first answer says it cannot be stored (private): one each."""
    release = asyncio.Event()
    async with cached(tmp_path, collapse_timeout=600) as c:
        c.origin.replies["/mine"] = held_back(release, {"Cache-Control": "private"})
        first = asyncio.ensure_future(fetch(c.url("/mine")))
        others = asyncio.ensure_future(herd(c, "/mine", 5))
        await eventually(waiting(c, 5), "five requests wait for the first one's answer")
        release.set()
        answers = await others
        mine = await first
    assert c.origin.hits("/mine") == 6
    assert mine[1]["Cache-Status"] == "edge-gateway; fwd=uri-miss; fwd-status=200; detail=private"
    assert {(status, cache_status) for status, cache_status, _ in answers} == {
        (200, "edge-gateway; fwd=bypass; fwd-status=200; detail=collapse-timeout")
    }


async def test_waiters_fetch_for_themselves_once_their_wait_is_over(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with cached(tmp_path, collapse_timeout=0.05) as c:
        c.origin.replies["/slow"] = held_back(release, {"Cache-Control": "max-age=60"})
        first = asyncio.ensure_future(fetch(c.url("/slow")))
        await eventually(_hit(c, "/slow", 1), "the first request reached the origin")
        c.origin.replies["/slow"] = (200, {"Cache-Control": "max-age=60"}, b"direct")
        second = await fetch(c.url("/slow"))
        release.set()
        await first
    assert second[2] == b"direct"
    assert second[1]["Cache-Status"] == (
        "edge-gateway; fwd=bypass; fwd-status=200; detail=collapse-timeout"
    )


def _hit(c: Cached, path: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return c.origin.hits(path) == count

    return check
