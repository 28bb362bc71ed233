"""Nothing meant for one user reaches another: two clients, one with credentials or a
session, against an origin that personalises; each shape the held-out runs of other
caches got wrong (Souin storing Set-Cookie, ignoring private with Authorization)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from tests.cache.origin import Reply
from tests.cache.support import cached
from tests.cache.test_collapse import waiting
from tests.cache.test_stale import hits as reached
from tests.client import eventually


def personal(request: web.Request, cache_control: str, **more: str) -> Reply:
    """An answer naming who asked (the Authorization or the session cookie)."""
    who = request.headers.get("Authorization") or request.cookies.get("session") or "anon"
    return 200, {"Cache-Control": cache_control, **more}, f"for {who}".encode()


@pytest.mark.parametrize(
    "cache_control",
    ["max-age=60", "private, max-age=60", "no-store"],
    ids=["plain", "private", "no-store"],
)
async def test_an_authorised_answer_is_never_served_to_another_client(
    tmp_path: Path, cache_control: str
) -> None:
    async with cached(tmp_path) as c:
        c.origin.replies["/me"] = lambda r: personal(r, cache_control)
        ann = await c.get("/me", Authorization="Bearer ann")
        bob = await c.get("/me", Authorization="Bearer bob")
        anonymous = await c.get("/me")
    assert (ann[2], bob[2], anonymous[2]) == (b"for Bearer ann", b"for Bearer bob", b"for anon")
    assert ann[1]["Cache-Status"].endswith(
        "detail=authorization" if cache_control == "max-age=60" else
        f"detail={cache_control.split(',')[0]}"
    )  # fmt: skip


async def test_an_authorised_answer_that_says_public_is_shared_and_only_then(
    tmp_path: Path,
) -> None:
    async with cached(tmp_path) as c:
        c.origin.replies["/news"] = lambda r: personal(r, "public, max-age=60")
        ann = await c.get("/news", Authorization="Bearer ann")
        bob = await c.get("/news", Authorization="Bearer bob")
    assert (ann[2], bob[2]) == (b"for Bearer ann", b"for Bearer ann")  # §3.5: it said so
    assert bob[1]["Cache-Status"].startswith("edge-gateway; hit")


async def test_an_anonymous_entry_does_not_answer_an_authorised_request(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.replies["/home"] = lambda r: personal(r, "max-age=60")
        await c.get("/home")
        signed_in = await c.get("/home", Authorization="Bearer ann")
    assert signed_in[2] == b"for Bearer ann"


async def test_an_answer_setting_a_cookie_is_never_replayed(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.replies["/login"] = lambda r: personal(
            r, "public, max-age=60", **{"Set-Cookie": f"session={r.query.get('u')}"}
        )
        ann = await c.get("/login?u=ann")
        also_ann = await c.get("/login?u=ann")
    assert (ann[1]["Set-Cookie"], also_ann[1]["Set-Cookie"]) == ("session=ann", "session=ann")
    assert also_ann[1]["Cache-Status"].startswith("edge-gateway; fwd=bypass")
    assert c.origin.hits("/login") == 2


async def test_vary_cookie_keeps_each_sessions_answer_its_own(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.replies["/cart"] = lambda r: personal(r, "max-age=60", Vary="Cookie")
        ann = await c.get("/cart", Cookie="session=ann")
        bob = await c.get("/cart", Cookie="session=bob")
        ann_again = await c.get("/cart", Cookie="session=ann")
    assert (ann[2], bob[2], ann_again[2]) == (b"for ann", b"for bob", b"for ann")
    assert ann_again[1]["Cache-Status"].startswith("edge-gateway; hit")


async def test_collapsed_waiters_never_get_an_answer_that_could_not_be_stored(
    tmp_path: Path,
) -> None:
    """Ann's slow private answer is in flight while Bob's request for the same URL waits
    on it: Bob gets his own answer from the origin, never Ann's."""
    release = asyncio.Event()

    async def slow_personal(request: web.Request) -> Reply:
        if request.cookies.get("session") == "ann":
            await release.wait()
        return personal(request, "private, max-age=60")

    async with cached(tmp_path) as c:
        c.origin.replies["/account"] = slow_personal
        ann = asyncio.ensure_future(c.get("/account", Cookie="session=ann"))
        await eventually(reached(c, "/account", 1), "ann's request reached the origin")
        bob = asyncio.ensure_future(c.get("/account", Cookie="session=bob"))
        await eventually(waiting(c, 1), "bob's request waits on ann's fill")
        release.set()
        answers = (await ann, await bob)
    assert (answers[0][2], answers[1][2]) == (b"for ann", b"for bob")
