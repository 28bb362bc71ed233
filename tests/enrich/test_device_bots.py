"""Device and bot verdicts on real user agents, the real crawler-user-agents list and
the user's own patterns and IP ranges."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from gateway.config.enrich import BotPattern
from gateway.enrich.bots import BotDetector, crawler_list
from gateway.enrich.device import DeviceParser
from tests.enrich.agents import (
    AXIOS,
    BINGBOT,
    CHROME_ANDROID,
    CHROME_HINTS,
    CHROME_WINDOWS,
    EDGE_WINDOWS,
    FIREFOX_MAC,
    GOOGLEBOT,
    GPTBOT,
    PIXEL_HINTS,
    PYTHON_REQUESTS,
    SAFARI_IPAD,
    SAFARI_IPHONE,
)


def decoded(raw: msgspec.Raw) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(bytes(raw))
    return result


def device(agent: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return decoded(DeviceParser(64).describe(agent, headers)[0])


@pytest.mark.parametrize(
    ("agent", "headers", "expected"),
    [
        (CHROME_WINDOWS, None,
         ("Chrome", "131", "Windows", "10", None, None, None, "desktop")),
        (CHROME_WINDOWS, CHROME_HINTS,  # the reduced UA says 10; the platform version says 11
         ("Chrome", "131", "Windows", "11", None, None, None, "desktop")),
        (CHROME_ANDROID, PIXEL_HINTS,  # the model only Client Hints tell
         ("Chrome", "131", "Android", "14.0.0", "Pixel 7", "Generic_Android", "Pixel 7", "mobile")),
        (SAFARI_IPHONE, None,
         ("Mobile Safari", "18", "iOS", "18.2", "iPhone", "Apple", "iPhone", "mobile")),
        (SAFARI_IPAD, None,
         ("Mobile Safari", "17", "iOS", "17.5", "iPad", "Apple", "iPad", "tablet")),
        (FIREFOX_MAC, None,
         ("Firefox", "133", "Mac OS X", "10.15", "Mac", "Apple", "Mac", "desktop")),
        (EDGE_WINDOWS, None, ("Edge", "131", "Windows", "10", None, None, None, "desktop")),
        (GOOGLEBOT, None, ("Googlebot", "2", None, None, "Spider", "Spider", "Desktop", "bot")),
        (PYTHON_REQUESTS, None,
         ("Python Requests", "2", None, None, None, None, None, "other")),
        ("", None, (None, None, None, None, None, None, None, "other")),
    ],
)  # fmt: skip
def test_device_from_the_user_agent_and_client_hints(
    agent: str, headers: dict[str, str] | None, expected: tuple[Any, ...]
) -> None:
    keys = ("browser", "browser_version", "os", "os_version", "device", "brand", "model", "type")
    assert device(agent, headers) == dict(zip(keys, expected, strict=True))


def test_malformed_client_hints_are_ignored_not_fatal() -> None:
    hints = {"Sec-CH-UA": '"Google Chrome";v="131", ', "Sec-CH-UA-Platform": "Windows"}
    described = device(CHROME_WINDOWS, hints)  # a trailing comma; a token, not a string
    assert (described["browser"], described["os"], described["os_version"]) == (
        "Chrome", "Windows", "10",
    )  # fmt: skip


def test_parsed_agents_are_kept_encoded_and_bounded() -> None:
    parser = DeviceParser(16)
    first = parser.describe(CHROME_WINDOWS)
    assert parser.describe(CHROME_WINDOWS)[0] is first[0]  # the same encoded member, not a reparse
    for n in range(40):
        parser.describe(f"Agent/{n}")
    assert len(parser._cache) == 16


def verdict(detector: BotDetector, agent: str, ip: str | None = None) -> dict[str, Any]:
    raw, is_bot = detector.verdict(agent, ip)
    member = decoded(raw)
    assert member["is_bot"] is is_bot
    return member


def test_the_crawler_list_names_bots_and_their_category() -> None:
    detector = BotDetector((), (), 64)
    assert verdict(detector, GOOGLEBOT) == {
        "is_bot": True, "name": "Googlebot\\/", "by": "list", "category": "search-engine",
    }  # fmt: skip
    assert verdict(detector, GPTBOT)["category"] == "ai-crawler"
    assert verdict(detector, BINGBOT)["name"] == "bingbot"
    # Server SDKs are on the list (http-library): only browser events are checked (below).
    assert verdict(detector, PYTHON_REQUESTS)["category"] == "http-library"
    assert verdict(detector, AXIOS)["category"] == "http-library"
    for agent in (CHROME_WINDOWS, SAFARI_IPHONE, FIREFOX_MAC, EDGE_WINDOWS, CHROME_ANDROID):
        assert verdict(detector, agent) == {
            "is_bot": False, "name": None, "by": None, "category": None,
        }, agent  # fmt: skip


def test_the_rust_matcher_agrees_with_python_re_on_every_listed_example() -> None:
    """ua-parser-rs's engine stands in for the list's regexes: on each of the list's own
    examples it finds the entry Python's ``re`` finds first."""
    from crawleruseragents import CRAWLER_USER_AGENTS_DATA

    detector = BotDetector((), (), 1 << 16)
    compiled = [re.compile(pattern) for pattern, _, _ in crawler_list()]
    checked = 0
    for entry in CRAWLER_USER_AGENTS_DATA:
        for example in entry["instances"]:
            first = next(i for i, pattern in enumerate(compiled) if pattern.search(example))
            assert verdict(detector, example)["name"] == crawler_list()[first][1], example
            checked += 1
    assert checked > 2000


def test_own_patterns_come_first_then_ip_ranges() -> None:
    detector = BotDetector(
        (BotPattern(name="uptime-probe", pattern=r"UptimeProbe/\d"),),
        ("203.0.113.0/24", "2001:db8::/32"),
        64,
    )
    assert verdict(detector, "UptimeProbe/2 (+https://status.example)")["name"] == "uptime-probe"
    assert verdict(detector, f"{GOOGLEBOT} UptimeProbe/1")["by"] == "pattern"
    assert verdict(detector, CHROME_WINDOWS, "203.0.113.77") == {
        "is_bot": True, "name": "203.0.113.0/24", "by": "ip_range", "category": None,
    }  # fmt: skip
    assert verdict(detector, CHROME_WINDOWS, "2001:db8:1::5")["name"] == "2001:db8::/32"
    assert verdict(detector, CHROME_WINDOWS, "198.51.100.1")["is_bot"] is False
    assert verdict(detector, CHROME_WINDOWS, "not an address")["is_bot"] is False


def test_ua_parsers_spiders_count_when_the_list_misses() -> None:
    detector = BotDetector((), (), 64)
    assert verdict(detector, "Mozilla/5.0 (SomeNewThing)", None)["is_bot"] is False
    raw, is_bot = detector.verdict("Mozilla/5.0 (SomeNewThing)", None, spider=True)
    assert (decoded(raw)["by"], is_bot) == ("ua_parser", True)
