"""The pixel scenarios with a realistic mix of visitors (pixel_mix, pixel_enriched): a
few hundred distinct user agents and some thousands of addresses spread over MaxMind's
City test database, rotated by wrk request after request; pixel_enriched turns every
step of tracking.enrich on, pixel_mix none, so the two compare the cost of enrichment
on the same requests."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

TEST_DATA = Path(__file__).resolve().parent.parent / "tests" / "enrich" / "data"
MIX_SIZE = 4000  # requests wrk cycles through (pre-formatted once)

_CHROME = ("Mozilla/5.0 ({os}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
           "{mobile}Safari/537.36")  # fmt: skip
_DESKTOPS = ("Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7",
             "X11; Linux x86_64", "X11; CrOS x86_64 14541.0.0")  # fmt: skip
_SAFARI = ("Mozilla/5.0 ({device}; CPU {os} {v}_{minor} like Mac OS X) AppleWebKit/605.1.15 "
           "(KHTML, like Gecko) Version/{v}.{minor} Mobile/15E148 Safari/604.1")  # fmt: skip
_FIREFOX = "Mozilla/5.0 ({os}; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
_BOTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; "
    "+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
    "+https://openai.com/gptbot)",
    "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
)
# Networks of GeoIP2-City-Test.mmdb (and its ASN sibling), with a city or a country.
_KNOWN_NETWORKS = ("81.2.69.{}", "89.160.20.{}", "216.160.83.{}", "2.125.160.{}",
                   "175.16.199.{}", "67.43.156.{}", "214.78.120.{}", "1.128.0.{}")  # fmt: skip


def user_agents() -> list[str]:
    """About 300 distinct agents: browsers over versions and platforms, and crawlers."""
    agents = []
    for v in range(100, 140):
        for os_name in _DESKTOPS:
            agents.append(_CHROME.format(os=os_name, v=v, mobile=""))
        agents.append(_CHROME.format(os="Linux; Android 10; K", v=v, mobile="Mobile "))
    for v in range(15, 19):
        for minor in range(0, 7):
            for device, os_name in (("iPhone", "iPhone OS"), ("iPad", "OS")):
                agents.append(_SAFARI.format(device=device, os=os_name, v=v, minor=minor))
    for v in range(110, 134):
        for os_name in ("Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10.15"):
            agents.append(_FIREFOX.format(os=os_name, v=v))
    return [*agents, *_BOTS]


def addresses(rng: random.Random) -> list[str]:
    """Addresses the databases know (70%) and public ones they do not (30%)."""
    known = [network.format(host) for network in _KNOWN_NETWORKS for host in range(1, 255)]
    known += [f"2001:480:10::{host:x}" for host in range(1, 255)]
    unknown = [f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
               f"{rng.randint(1, 254)}" for _ in range(len(known) * 3 // 7)]  # fmt: skip
    return known + unknown


def visitor_mix() -> tuple[dict[str, str], ...]:
    """The request headers wrk rotates through: an agent and an address each, drawn
    with a fixed seed so every run and server sees the same requests."""
    rng = random.Random(31)
    agents, ips = user_agents(), addresses(rng)
    return tuple(
        {"User-Agent": rng.choice(agents), "X-Forwarded-For": rng.choice(ips)}
        for _ in range(MIX_SIZE)
    )


def enrich_section() -> dict[str, Any]:
    """Every step on, with MaxMind's test databases (the ones the tests use)."""
    return {
        "device": {}, "bots": {},
        "geo": {"city_db": str(TEST_DATA / "GeoIP2-City-Test.mmdb"),
                "asn_db": str(TEST_DATA / "GeoLite2-ASN-Test.mmdb")},
        "campaign": {}, "referrer": {}, "ip": {},
        "consent": {"rules": [{"category": "Advertising", "action": "drop"}]},
        "pii": {"salt": "benchmark-salt-0123456789", "fields": ["properties.email"]},
    }  # fmt: skip
