"""Redirect links: short links, signed ad-hoc links, the management API, shared state."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest

from gateway.links.safety import sign
from tests.apache_kafka import ApacheKafka
from tests.client import eventually
from tests.events_support import consume, tracking_config, values
from tests.support import base_config, in_process_gateway, with_routes

TOKEN = "t0ken-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYS = ["new-signing-key", "old-signing-key"]


def links_config(tmp_path: Path, bootstrap: str | None = None, **redirects: Any) -> dict[str, Any]:
    config = tracking_config(tmp_path, bootstrap) if bootstrap else base_config(tmp_path)
    config = with_routes(config, {"name": "links", "match": {"path_prefix": "/l"}, "redirect": {}})
    config["redirects"] = {
        "admin_token": TOKEN,
        "signing_keys": KEYS,
        "allowed_hosts": ["partner.example", "*.shop.example"],
        "file": str(tmp_path / "links.jsonl"),
        "topic": f"links-{tmp_path.name[-12:]}",
        **redirects,
    }
    return config


async def call(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            url,
            json=body,
            headers=AUTH if headers is None else headers,
            allow_redirects=False,
        ) as resp,
    ):
        text = await resp.text()
        try:
            parsed = json.loads(text) if text else None
        except json.JSONDecodeError:
            parsed = text
        return resp.status, resp.headers, parsed


async def answers(url: str, status: int, limit: float) -> None:
    """Until ``url`` answers ``status``: a change made elsewhere arriving here."""

    async def check() -> bool:
        return (await call("GET", url, headers={}))[0] == status

    await eventually(check, f"{url} answers {status}", limit, every=0.05)


def api(gw: Any, path: str = "") -> str:
    return gw.url(f"/_gateway/links{path}", listener="admin")


async def test_short_link_redirects_with_campaign_and_passed_query(tmp_path: Path) -> None:
    async with in_process_gateway(links_config(tmp_path), tmp_path) as gw:
        link = {
            "slug": "spring", "target": "https://www.shop.example/sale?ref=1#top",
            "campaign": {"utm_source": "mail", "utm_campaign": "spring sale"},
            "pass_query": True, "tags": ["mail"],
        }  # fmt: skip
        status, _, created = await call("POST", api(gw), link)
        assert (status, created["slug"]) == (201, "spring")
        status, headers, _ = await call("GET", gw.url("/l/spring?x=1&y=%20"), headers={})
    assert status == 302
    assert headers["Location"] == (
        "https://www.shop.example/sale?ref=1&utm_source=mail&utm_campaign=spring%20sale"
        "&x=1&y=%20#top"
    )
    assert headers["Cache-Control"] == "no-store"


async def test_unknown_disabled_and_expired_links(tmp_path: Path) -> None:
    async with in_process_gateway(links_config(tmp_path), tmp_path) as gw:
        expired = {"slug": "old", "target": "https://a.example/",
                   "expires_at": "2001-01-01T00:00:00Z"}  # fmt: skip
        off = {"slug": "off", "target": "https://a.example/"}
        assert [(await call("POST", api(gw), link))[0] for link in (expired, off)] == [201, 201]
        assert (await call("POST", api(gw, "/off/disable")))[0] == 200
        assert (await call("GET", gw.url("/l/old"), headers={}))[0] == 410
        assert (await call("GET", gw.url("/l/off"), headers={}))[0] == 404
        status, _, body = await call("GET", gw.url("/l/nope"), headers={})
        assert (status, body) == (404, "404 Not Found: no such link\n")
        _, _, metrics = await call("GET", gw.url("/_gateway/metrics", listener="admin"))
    assert "gateway_redirect_misses_total 2.0" in metrics


async def test_status_options_and_config_links(tmp_path: Path) -> None:
    config = links_config(
        tmp_path, links=[{"slug": "docs", "target": "https://docs.example/", "status": 308}]
    )
    async with in_process_gateway(config, tmp_path) as gw:
        status, headers, _ = await call("GET", gw.url("/l/docs"), headers={})
        assert (status, headers["Location"]) == (308, "https://docs.example/")
        status, _, body = await call("DELETE", api(gw, "/docs"))
        assert (status, body) == (409, "409 Conflict: link 'docs' is defined in the config file\n")


async def test_management_api_crud_pagination_and_errors(tmp_path: Path) -> None:
    async with in_process_gateway(links_config(tmp_path), tmp_path) as gw:
        for i in range(5):
            tags = ["even"] if i % 2 == 0 else []
            body = {"slug": f"s{i}", "target": f"https://a.example/{i}", "tags": tags}
            assert (await call("POST", api(gw), body))[0] == 201
        status, _, generated = await call("POST", api(gw), {"target": "https://a.example/g"})
        assert status == 201 and len(generated["slug"]) == 7
        taken = await call("POST", api(gw), {"slug": "s1", "target": "https://a.example/"})
        assert taken[::2] == (409, "409 Conflict: slug 's1' is taken\n")
        _, _, page = await call("GET", api(gw, "?tag=even&offset=1&limit=1"))
        assert (page["total"], [link["slug"] for link in page["links"]]) == (3, ["s2"])
        status, _, patched = await call("PATCH", api(gw, "/s1"), {"status": 307})
        assert (status, patched["status"], patched["target"]) == (200, 307, "https://a.example/1")
        assert (await call("GET", gw.url("/l/s3"), headers={}))[1]["Location"] == (
            "https://a.example/3"
        )
        new_target = {"target": "https://b.example/new"}
        assert (await call("PATCH", api(gw, "/s3"), new_target))[0] == 200
        # A changed link sends its new Location, not the one its last click remembered.
        assert (await call("GET", gw.url("/l/s3"), headers={}))[1]["Location"] == (
            "https://b.example/new"
        )
        assert (await call("DELETE", api(gw, "/s1")))[0] == 204
        assert (await call("GET", api(gw, "/s1")))[0] == 404
        assert (await call("GET", gw.url("/l/s1"), headers={}))[0] == 404
        bad = [
            ({"slug": "x", "target": "javascript:alert(1)"},
             "target: target URL must start with http:// or https://"),
            ({"slug": "-x", "target": "https://a.example/"},
             "slug: must be 1-64 letters, digits, '-' or '_', not starting with - or _"),
            ({"slug": "y", "target": "https://a.example/", "status": 200},
             "status: must be 301, 302, 307 or 308"),
            ({"slug": "z", "target": "https://a.example/", "campaign": {"utm_x": "1"}},
             "campaign: 'utm_x' is not one of utm_source, utm_medium, utm_campaign, "
             "utm_term, utm_content"),
            ({"slug": "w", "target": "https://a.example/", "colour": "red"},
             "colour: unknown field"),
        ]  # fmt: skip
        for body, reason in bad:
            assert (await call("POST", api(gw), body))[::2] == (400, f"400 Bad Request: {reason}\n")


async def test_management_api_needs_the_token_and_the_admin_listener(tmp_path: Path) -> None:
    async with in_process_gateway(links_config(tmp_path), tmp_path) as gw:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-token-wrong-token"},
            {"Authorization": TOKEN},
        ):
            status, answer, _ = await call("GET", api(gw), headers=headers)
            assert (status, answer["WWW-Authenticate"]) == (401, "Bearer")
        assert (await call("GET", gw.url("/_gateway/links")))[0] == 404  # public listener


async def test_links_are_shared_through_the_file_between_workers(tmp_path: Path) -> None:
    config = links_config(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    second = json.loads(json.dumps(config))
    second["spool"] = {"dir": str(other / "spool")}
    async with in_process_gateway(config, tmp_path) as a, in_process_gateway(second, other) as b:
        link = {"slug": "shared", "target": "https://a.example/x"}
        assert (await call("POST", api(a), link))[0] == 201
        await answers(b.url("/l/shared"), 302, 2)
        assert (await call("DELETE", api(b, "/shared")))[0] == 204
        await answers(a.url("/l/shared"), 404, 2)


async def test_links_through_kafka_across_instances_and_restarts(
    tmp_path: Path, kafka_broker: ApacheKafka
) -> None:
    config = links_config(tmp_path, kafka_broker.bootstrap)
    other = tmp_path / "other"
    other.mkdir()
    second = json.loads(json.dumps(config))
    second["spool"] = {"dir": str(other / "spool")}
    async with in_process_gateway(config, tmp_path) as a, in_process_gateway(second, other) as b:
        for slug in ("k1", "k2"):
            link = {"slug": slug, "target": f"https://a.example/{slug}"}
            assert (await call("POST", api(a), link))[0] == 201
        await answers(b.url("/l/k1"), 302, 3)
        await answers(b.url("/l/k2"), 302, 3)  # b knows it, or its DELETE would be a 404
        assert (await call("DELETE", api(b, "/k2")))[0] == 204
        await answers(a.url("/l/k2"), 404, 3)
    # A fresh process reads the topic from the beginning.
    async with in_process_gateway(config, tmp_path) as again:
        assert (await call("GET", again.url("/l/k1"), headers={}))[0] == 302
        assert (await call("GET", again.url("/l/k2"), headers={}))[0] == 404


async def test_click_event(tmp_path: Path, kafka_broker: ApacheKafka) -> None:
    config = links_config(tmp_path, kafka_broker.bootstrap)
    async with in_process_gateway(config, tmp_path) as gw:
        link = {"slug": "ev", "target": "https://a.example/e", "campaign": {"utm_source": "ad"}}
        assert (await call("POST", api(gw), link))[0] == 201
        clicked = await call("GET", gw.url("/l/ev?q=1"), headers={"Cookie": "vid=visitor-1"})
        assert (clicked[0], clicked[1]["Location"]) == (302, "https://a.example/e?utm_source=ad")
    (event,) = values(await consume(kafka_broker.bootstrap, config["kafka"]["topic"], 1))
    assert (event["event_type"], event["event_name"], event["anonymous_id"]) == (
        "redirect", "ev", "visitor-1"
    )  # fmt: skip
    assert event["properties"] == {
        "slug": "ev", "target": "https://a.example/e", "location": "https://a.example/e?utm_source=ad",
        "utm_source": "ad", "flagged": False,
    }  # fmt: skip
    assert event["query"] == "q=1"


async def test_signed_adhoc_redirects_with_key_rotation(tmp_path: Path) -> None:
    target = "https://anywhere.example/page?a=1"
    async with in_process_gateway(links_config(tmp_path), tmp_path) as gw:
        for key in KEYS:  # the new key and the one being rotated out
            url = gw.url(f"/l/r?u={quote(target, safe='')}&sig={sign(key, target)}")
            status, headers, _ = await call("GET", url, headers={})
            assert (status, headers["Location"]) == (302, target)
        forged = gw.url(f"/l/r?u={quote(target, safe='')}&sig={sign('retired-key', target)}")
        status, _, body = await call("GET", forged, headers={})
        assert (status, body) == (
            400,
            "400 Bad Request: target is neither signed nor on the allow-list\n",
        )
        allowed = "https://www.shop.example/x"
        status, headers, _ = await call(
            "GET", gw.url(f"/l/r?u={quote(allowed, safe='')}"), headers={}
        )
        assert (status, headers["Location"]) == (302, allowed)


def hostile_targets() -> list[str]:
    hosts = ["evil.example", "shop.example", "partner.example.evil.example", "evil.example%2f",
             "127.0.0.1", "[::1]", "0x7f.1", "2130706433", "127.1", "partner.example@evil.example",
             "evil.example\\@partner.example", "partner.example.", "xn--pple-43d.com"]  # fmt: skip
    prefixes = ["https://", "http://", "//", "/\\", "\\\\", "https:", "https:/",
                "javascript:", "data:text/html,", "HTTPS://", " https://", "https://\t",
                "ftp://", "https:///"]  # fmt: skip
    suffixes = ["", "/", "/path?q=1", "#frag", "%0d%0aSet-Cookie:x=1", ":80@partner.example/"]
    targets = [p + h + s for p, h, s in itertools.product(prefixes, hosts, suffixes)]
    targets += ["https://partner.example\r\nLocation: https://evil.example",
                "https://evil.example\x00.partner.example", "https://партнёр.example/",
                "http://partner.example:99999/", "https://%65vil.example/"]  # fmt: skip
    return targets


async def test_open_redirect_corpus_never_leaves_allowed_hosts(tmp_path: Path) -> None:
    corpus = hostile_targets()
    assert len(corpus) > 500
    async with in_process_gateway(links_config(tmp_path), tmp_path) as gw:
        async with aiohttp.ClientSession() as session:
            for target in corpus:
                url = gw.url(f"/l/r?u={quote(target, safe='')}")
                async with session.get(url, allow_redirects=False) as resp:
                    if resp.status in (301, 302, 303, 307, 308):
                        # A trailing dot names the same DNS host.
                        host = (urlsplit(resp.headers["Location"]).hostname or "").rstrip(".")
                        assert host == "partner.example" or host.endswith(".shop.example"), target
                        assert resp.headers["Location"] == target
                    else:
                        assert resp.status == 400, target


@pytest.mark.parametrize(
    ("redirects", "issue"),
    [
        ({"links": [{"slug": "a", "target": "ftp://x.example/"}]},
         "redirects.links[0].target: target URL must start with http:// or https://"),
        ({"admin_token": "short"}, "redirects.admin_token: must be at least 16 characters"),
    ],
)  # fmt: skip
def test_redirect_config_errors(tmp_path: Path, redirects: dict[str, Any], issue: str) -> None:
    from gateway.config import ConfigError, parse_config

    config = links_config(tmp_path, **redirects)
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(config).encode(), env={})
    assert [str(i) for i in caught.value.issues] == [issue]


async def test_links_command_line_talks_to_the_api(tmp_path: Path) -> None:
    import sys

    async with in_process_gateway(links_config(tmp_path), tmp_path) as gw:
        base = ["--config", str(gw.config_path), "--url", gw.url("", listener="admin").rstrip("/")]

        async def cli(*args: str) -> tuple[int, str, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway", "links", *base, *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await process.communicate()
            return process.returncode or 0, out.decode(), err.decode()

        assert await cli("add", "https://a.example/x", "--slug", "cli", "--utm-source", "cli") == (
            0, "cli\n", ""
        )  # fmt: skip
        status, headers, _ = await call("GET", gw.url("/l/cli"), headers={})
        assert (status, headers["Location"]) == (302, "https://a.example/x?utm_source=cli")
        assert await cli("list") == (0, "cli\t302\thttps://a.example/x\n", "")
        assert await cli("rm", "cli") == (0, "", "")
        assert await cli("rm", "cli") == (1, "", "gateway: 404 Not Found: no such link\n")


async def test_links_load_once_kafka_comes_up(tmp_path: Path, broker_factory: Any) -> None:
    broker = broker_factory()  # nothing listens there yet
    config = links_config(tmp_path, broker.bootstrap, links=[
        {"slug": "cfg", "target": "https://a.example/cfg"}
    ])  # fmt: skip
    async with in_process_gateway(config, tmp_path) as gw:
        status, headers, _ = await call("GET", gw.url("/l/cfg"), headers={})
        assert (status, headers["Retry-After"]) == (503, "1")
        assert (await call("GET", api(gw)))[0] == 503
        _, _, ready = await call("GET", gw.url("/_gateway/ready"), headers={})
        assert ready["checks"]["links"] == {"ok": False, "detail": "loading links"}
        broker.start()
        await answers(gw.url("/l/cfg"), 302, 20)
