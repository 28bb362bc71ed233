"""Purges through the admin API: by URL, prefix and tag, hard and soft; what a bad
request gets; and large answers, relayed as they stream and never stored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp import web

from tests.cache.support import Cached, cached
from tests.client import fetch

CACHEABLE = {"Cache_Control": "max-age=60, stale-while-revalidate=60"}


async def stored(c: Cached, *paths: str) -> None:
    for path in paths:
        c.origin.answer(path.split("?")[0], **CACHEABLE)
        await c.get(path)


async def hit(c: Cached, path: str) -> bool:
    return (await c.get(path))[1]["Cache-Status"].startswith("edge-gateway; hit")


async def test_a_purge_by_url_removes_that_url_and_no_other(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        await stored(c, "/a?x=1", "/a?x=2", "/b")
        status, body = await c.purge(url=c.url("/a?x=1"))
        assert (status, json.loads(body)) == (
            200, {"purged": 1, "kind": "url", "value": c.url("/a?x=1"), "soft": False}
        )  # fmt: skip
        assert [await hit(c, p) for p in ("/a?x=1", "/a?x=2", "/b")] == [False, True, True]


async def test_a_purge_by_prefix_removes_everything_below_it(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        await stored(c, "/blog/one", "/blog/two", "/shop")
        status, body = await c.purge(prefix=c.url("/blog/"))
        assert (status, json.loads(body)["purged"]) == (200, 2)
        assert [await hit(c, p) for p in ("/blog/one", "/blog/two", "/shop")] == [
            False,
            False,
            True,
        ]


async def test_a_purge_by_tag_removes_what_the_origin_tagged(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/p1", Surrogate_Key="product-1 catalog", **CACHEABLE)
        c.origin.answer("/p2", Surrogate_Key="product-2 catalog", **CACHEABLE)
        await c.get("/p1")
        await c.get("/p2")
        status, body = await c.purge(tag="product-1")
        assert (status, json.loads(body)["purged"]) == (200, 1)
        assert [await hit(c, "/p1"), await hit(c, "/p2")] == [False, True]
        # p1 was fetched again above, and stored with its tags again: both go now.
        assert json.loads((await c.purge(tag="catalog"))[1])["purged"] == 2
        assert [await hit(c, "/p1"), await hit(c, "/p2")] == [False, False]


async def test_a_soft_purge_marks_stale_so_it_is_served_while_it_refreshes(
    tmp_path: Path,
) -> None:
    async with cached(tmp_path) as c:
        await stored(c, "/page")
        assert (await c.purge(url=c.url("/page"), soft=True))[0] == 200
        answer = await c.get("/page")
    assert answer[1]["Cache-Status"].startswith("edge-gateway; hit; ttl=0")
    assert answer[1]["Cache-Status"].endswith("detail=stale-while-revalidate")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", 'the body is a JSON object: {"url"|"prefix"|"tag": ..., "soft": bool}'),
        (b'{"url": "/x", "tag": "y"}', "name exactly one of url, prefix and tag"),
        (b'{"url": "https://a.example/", "hard": true}', "unknown member 'hard'"),
        (b'{"tag": ""}', "tag must be a non-empty string and soft a boolean"),
        (b'{"url": "/no/host"}', "'/no/host' names no host"),
        (b"{", "the body is not JSON"),
    ],
)
async def test_a_purge_request_that_makes_no_sense_is_400(
    tmp_path: Path, body: bytes, reason: str
) -> None:
    async with cached(tmp_path) as c:
        url = c.gw.url("/_gateway/cache/purge", listener="admin")
        status, _, answer = await fetch(url, "POST", data=body)
        public = await fetch(c.gw.url("/_gateway/cache/purge"), "POST", data=b"{}")
    assert (status, answer.decode()) == (400, f"400 Bad Request: {reason}\n")
    assert public[0] == 404  # admin listeners only


async def test_an_answer_larger_than_the_limit_streams_through_and_is_not_stored(
    tmp_path: Path,
) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Cache-Control": "max-age=60"})
        await response.prepare(request)  # no Content-Length: judged as it streams
        for _ in range(40):
            await response.write(b"x" * 8192)
        await response.write_eof()
        return response

    async with cached(tmp_path, max_entry_bytes=100_000) as c:
        c.origin.answer("/declared", body=b"z" * 200_000, **CACHEABLE)
        c.origin.replies["/chunked"] = chunked
        declared = await c.get("/declared")
        streamed = await c.get("/chunked")
        again = await c.get("/chunked")
    assert declared[1]["Cache-Status"] == (
        "edge-gateway; fwd=uri-miss; fwd-status=200; detail=too-large"
    )
    assert len(declared[2]) == 200_000
    assert streamed[1]["Cache-Status"] == "edge-gateway; fwd=uri-miss; fwd-status=200"
    assert len(streamed[2]) == len(again[2]) == 40 * 8192
    assert again[1]["Cache-Status"] == "edge-gateway; fwd=uri-miss; fwd-status=200"
    assert c.origin.hits("/chunked") == 2
