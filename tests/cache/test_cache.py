"""The edge cache through a real gateway and origin: what is stored and for how long is
the origin's say (RFC 9111), ``Cache-Status`` (RFC 9211) says why, and each rule stands
in a test of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cache.origin import origin
from tests.cache.support import cache_config, cached
from tests.client import fetch
from tests.support import in_process_gateway

ONE_MINUTE = {"Cache_Control": "max-age=60"}


async def test_a_route_without_cache_stores_nothing(tmp_path: Path) -> None:
    async with origin() as scripted:
        scripted.answer("/page", **ONE_MINUTE)
        config = cache_config(tmp_path, scripted.url)
        del config["routes"][0]["cache"]
        async with in_process_gateway(config, tmp_path) as gw:
            first = await fetch(gw.url("/page"))
            second = await fetch(gw.url("/page"))
    assert scripted.hits("/page") == 2
    assert "Cache-Status" not in first[1] and "Cache-Status" not in second[1]


async def test_a_miss_is_stored_and_the_next_request_is_a_hit_with_its_age(
    tmp_path: Path,
) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", body=b"one", **ONE_MINUTE)
        miss = await c.get()
        c.clock.advance(7)
        hit = await c.get()
    assert (miss[0], miss[2], hit[0], hit[2]) == (200, b"one", 200, b"one")
    assert miss[1]["Cache-Status"] == "edge-gateway; fwd=uri-miss; fwd-status=200; stored; ttl=60"
    assert "Age" not in miss[1]
    assert hit[1]["Cache-Status"] == "edge-gateway; hit; ttl=53"
    assert hit[1]["Age"] == "7"
    assert hit[1]["Date"] == miss[1]["Date"]  # the stored Date, never rewritten
    assert c.origin.hits("/page") == 1


@pytest.mark.parametrize(
    ("headers", "fresh_for"),
    [
        ({"Cache_Control": "s-maxage=30, max-age=90"}, 30),
        ({"Cache_Control": "max-age=90", "Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, 90),
        ({"Expires": "+40"}, 40),
        ({"Cache_Control": "max-age=60", "Age": "50"}, 10),
    ],
    ids=["s-maxage-over-max-age", "max-age-over-expires", "expires-minus-date", "age-counts"],
)
async def test_freshness_comes_from_the_answer(
    tmp_path: Path, headers: dict[str, str], fresh_for: int
) -> None:
    async with cached(tmp_path) as c:
        if headers.get("Expires") == "+40":
            headers = {"Expires": c.origin.date(40)}
        c.origin.answer("/page", **headers)
        await c.get()
        c.clock.advance(fresh_for - 1)
        assert (await c.get())[1]["Cache-Status"].startswith("edge-gateway; hit;")
        c.clock.advance(2)
        stale = await c.get()
    assert stale[1]["Cache-Status"].startswith("edge-gateway; fwd=stale; fwd-status=200")
    assert c.origin.hits("/page") == 2


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"Cache_Control": "no-store, max-age=60"}, "no-store"),
        ({"Cache_Control": "private, max-age=60"}, "private"),
        ({"Cache_Control": "max-age=60", "Set_Cookie": "session=abc"}, "set-cookie"),
        ({"Cache_Control": "max-age=60", "Vary": "*"}, "vary-star"),
        ({}, "no-freshness"),
        ({"Cache_Control": "max-age=60", "Status": "206"}, "status"),
    ],
    ids=["no-store", "private", "set-cookie", "vary-star", "nothing", "partial"],
)
async def test_what_may_not_be_stored_is_relayed_and_says_why(
    tmp_path: Path, headers: dict[str, str], detail: str
) -> None:
    async with cached(tmp_path) as c:
        status = int(headers.pop("Status", "200"))
        c.origin.answer("/page", status=status, **headers)
        first = await c.get()
        second = await c.get()
    assert first[1]["Cache-Status"] == (
        f"edge-gateway; fwd=uri-miss; fwd-status={status}; detail={detail}"
    )
    assert second[1]["Cache-Status"] == (
        f"edge-gateway; fwd=bypass; fwd-status={status}; detail=uncacheable"
    )
    assert c.origin.hits("/page") == 2


async def test_private_fields_are_stored_without_the_fields_they_name(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", Cache_Control='max-age=60, private="X-User"', X_User="ann",
                        X_Other="kept")  # fmt: skip
        first = await c.get()
        hit = await c.get()
    assert first[1]["X-User"] == "ann"  # the one who asked gets the whole answer
    assert "X-User" not in hit[1] and hit[1]["X-Other"] == "kept"


async def test_a_new_answer_that_may_not_be_stored_removes_the_old_one(tmp_path: Path) -> None:
    async with cached(tmp_path, uncacheable_ttl=0) as c:
        c.origin.answer("/page", body=b"old", **ONE_MINUTE)
        await c.get()
        c.origin.answer("/page", body=b"new", Cache_Control="no-store")
        fresh = await c.get(Cache_Control="no-cache")
        after = await c.get()
    assert fresh[2] == b"new" and after[2] == b"new"
    assert c.origin.hits("/page") == 3


async def test_no_cache_is_stored_and_validated_before_every_use(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        etag = '"v1"'
        c.origin.answer("/page", body=b"body", Cache_Control="no-cache", ETag=etag)
        await c.get()
        c.origin.answer("/page", status=304, body=b"", ETag=etag, Cache_Control="no-cache")
        validated = await c.get()
    assert (validated[0], validated[2]) == (200, b"body")
    assert validated[1]["Cache-Status"] == "edge-gateway; fwd=stale; fwd-status=304; ttl=0"
    assert c.origin.seen[-1].headers["If-None-Match"] == etag


async def test_a_304_refreshes_the_stored_head_but_not_its_body_fields(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", body=b"0123456789", Cache_Control="max-age=10",
                        Last_Modified="Mon, 07 Dec 2026 00:00:00 GMT", X_Version="1")  # fmt: skip
        await c.get()
        c.clock.advance(11)
        c.origin.answer("/page", status=304, body=b"", Cache_Control="max-age=100",
                        X_Version="2", Content_Length="3")  # fmt: skip
        refreshed = await c.get()
        c.clock.advance(50)
        hit = await c.get()
    asked = c.origin.seen[1].headers
    assert asked["If-Modified-Since"] == "Mon, 07 Dec 2026 00:00:00 GMT"
    assert (refreshed[2], refreshed[1]["X-Version"], refreshed[1]["Content-Length"]) == (
        b"0123456789", "2", "10"
    )  # fmt: skip
    assert hit[1]["Cache-Status"] == "edge-gateway; hit; ttl=50"
    assert c.origin.hits("/page") == 2


async def test_a_clients_conditional_request_is_answered_304_from_a_fresh_entry(
    tmp_path: Path,
) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", ETag='"v1"', Last_Modified="Mon, 07 Dec 2026 00:00:00 GMT",
                        **ONE_MINUTE)  # fmt: skip
        await c.get()
        by_tag = await c.get(If_None_Match='W/"other", "v1"')
        by_date = await c.get(If_Modified_Since="Mon, 07 Dec 2026 00:00:01 GMT")
        changed = await c.get(If_None_Match='"v0"')
    assert (by_tag[0], by_tag[2], by_tag[1]["ETag"]) == (304, b"", '"v1"')
    assert by_date[0] == 304
    assert changed[0] == 200
    assert c.origin.hits("/page") == 1


async def test_head_and_ranges_are_served_from_a_get_entry(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", body=b"0123456789", **ONE_MINUTE)
        await c.get()
        head = await c.get(method="HEAD")
        part = await c.get(Range="bytes=2-4")
        suffix = await c.get(Range="bytes=-3")
        outside = await c.get(Range="bytes=50-60")
        several = await c.get(Range="bytes=0-1,5-6")
    assert (head[0], head[1]["Content-Length"], head[2]) == (200, "10", b"")
    assert (part[0], part[1]["Content-Range"], part[2]) == (206, "bytes 2-4/10", b"234")
    assert (suffix[0], suffix[2]) == (206, b"789")
    assert (outside[0], outside[1]["Content-Range"]) == (416, "bytes */10")
    assert (several[0], several[2]) == (200, b"0123456789")  # no multipart from the cache
    assert c.origin.hits("/page") == 1


@pytest.mark.parametrize(
    ("request_headers", "result"),
    [
        ({"Cache_Control": "no-cache"}, "fwd=stale"),
        ({"Cache_Control": "max-age=5"}, "fwd=stale"),
        ({"Cache_Control": "max-age=30"}, "hit"),
        ({"Cache_Control": "min-fresh=60"}, "fwd=stale"),
        ({"Pragma": "no-cache"}, "fwd=stale"),
    ],
    ids=["no-cache", "max-age-under-age", "max-age-over-age", "min-fresh", "pragma"],
)
async def test_the_requests_own_cache_control_is_honoured(
    tmp_path: Path, request_headers: dict[str, str], result: str
) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", **ONE_MINUTE)
        await c.get()
        c.clock.advance(10)
        answer = await c.get(**request_headers)
    assert answer[1]["Cache-Status"].startswith(f"edge-gateway; {result}")


async def test_max_stale_takes_a_stale_answer_unless_it_must_be_revalidated(
    tmp_path: Path,
) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/plain", Cache_Control="max-age=10")
        c.origin.answer("/strict", Cache_Control="max-age=10, must-revalidate")
        await c.get("/plain")
        await c.get("/strict")
        c.clock.advance(20)
        plain = await c.get("/plain", Cache_Control="max-stale=30")
        strict = await c.get("/strict", Cache_Control="max-stale")
    assert plain[1]["Cache-Status"] == "edge-gateway; hit; ttl=-10; detail=max-stale"
    assert strict[1]["Cache-Status"].startswith("edge-gateway; fwd=stale")


async def test_only_if_cached_is_504_without_an_entry_and_a_hit_with_one(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", **ONE_MINUTE)
        missing = await c.get(Cache_Control="only-if-cached")
        await c.get()
        held = await c.get(Cache_Control="only-if-cached")
    assert missing[0] == 504
    assert missing[1]["Cache-Status"] == "edge-gateway; fwd=miss; detail=only-if-cached"
    assert held[1]["Cache-Status"] == "edge-gateway; hit; ttl=60"
    assert c.origin.hits("/page") == 1


async def test_vary_keeps_one_entry_per_variant(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.replies["/page"] = lambda r: (
            200, {"Cache-Control": "max-age=60", "Vary": "Accept-Language"},
            r.headers.get("Accept-Language", "none").encode(),
        )  # fmt: skip
        en = await c.get(Accept_Language="en")
        fr = await c.get(Accept_Language="fr")
        en_again = await c.get(Accept_Language="en")
        absent = await c.get()
    assert (en[2], fr[2], en_again[2], absent[2]) == (b"en", b"fr", b"en", b"none")
    assert fr[1]["Cache-Status"].startswith("edge-gateway; fwd=vary-miss")
    assert en_again[1]["Cache-Status"].startswith("edge-gateway; hit")
    assert c.origin.hits("/page") == 3


async def test_the_key_drops_the_query_parameters_the_route_says(tmp_path: Path) -> None:
    async with cached(tmp_path, key={"query_drop": ["utm_*"]}) as c:
        c.origin.answer("/page", **ONE_MINUTE)
        await c.get("/page?a=1&utm_source=mail")
        same = await c.get("/page?a=1&utm_campaign=x")
        other = await c.get("/page?a=2")
    assert same[1]["Cache-Status"].startswith("edge-gateway; hit")
    assert other[1]["Cache-Status"].startswith("edge-gateway; fwd=uri-miss")


async def test_an_unsafe_request_invalidates_its_target_and_same_origin_location(
    tmp_path: Path,
) -> None:
    async with cached(tmp_path) as c:
        for path in ("/item", "/list", "/elsewhere"):
            c.origin.answer(path, ETag='"v1"', **ONE_MINUTE)
            await c.get(path)
        c.origin.answer("/item", status=200, body=b"done", Location="/list",
                        Content_Location="http://other.example/elsewhere")  # fmt: skip
        posted = await c.get("/item", method="POST")
        c.origin.answer("/item", status=304, body=b"", ETag='"v1"')
        c.origin.answer("/list", status=304, body=b"", ETag='"v1"')
        item, listed, elsewhere = [await c.get(p) for p in ("/item", "/list", "/elsewhere")]
    assert posted[1]["Cache-Status"] == "edge-gateway; fwd=bypass; fwd-status=200; detail=method"
    assert item[1]["Cache-Status"].startswith("edge-gateway; fwd=stale; fwd-status=304")
    assert listed[1]["Cache-Status"].startswith("edge-gateway; fwd=stale; fwd-status=304")
    assert elsewhere[1]["Cache-Status"].startswith("edge-gateway; hit")


async def test_the_cache_counts_what_it_did_per_route(tmp_path: Path) -> None:
    async with cached(tmp_path) as c:
        c.origin.answer("/page", **ONE_MINUTE)
        await c.get()
        await c.get()
        await c.get(method="POST")
        c.gw.worker.metrics.flush()
        text = (await fetch(c.gw.url("/_gateway/metrics", listener="admin")))[2].decode()
    for line in (
        'gateway_cache_requests_total{result="miss",route="site"} 1.0',
        'gateway_cache_requests_total{result="hit",route="site"} 1.0',
        'gateway_cache_requests_total{result="pass",route="site"} 1.0',
        'gateway_cache_stored_total{route="site"} 1.0',
        "gateway_cache_entries 1.0",
    ):
        assert line in text.splitlines(), line


def test_a_cache_on_a_route_that_does_not_proxy_is_a_config_error(tmp_path: Path) -> None:
    from gateway.config import ConfigError, parse_config

    config = cache_config(tmp_path, "http://127.0.0.1:9")
    config["routes"].append({"name": "hello", "respond": {}, "cache": {}})
    config["cache"]["purge_file"] = "/nonexistent/dir/purges.jsonl"
    with pytest.raises(ConfigError) as raised:
        parse_config(json.dumps(config).encode(), env={})
    assert [str(issue) for issue in raised.value.issues] == [
        "routes[1].cache: applies to proxy routes only",
        "cache.purge_file: /nonexistent/dir/purges.jsonl: "
        "directory '/nonexistent/dir' does not exist",
    ]
