"""Campaign and referrer: where the visit came from.

Campaign: ``utm_*`` parameters and click ids (gclid, msclkid, fbclid, ...) of the page
URL (else the request's own query: pixels and redirect links carry them there). Most
URLs have none, and a substring test tells so before any parsing.

Referrer: the referring page's host, and a medium from a short list of well-known hosts
written here (search, social, email, chatbot), the user's own hosts, ``internal`` for
the page's own site, ``unknown`` for any other host and ``direct`` when there is none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gateway.bounded import Bounded

_UTM = {"utm_source": "source", "utm_medium": "medium", "utm_campaign": "name",
        "utm_term": "term", "utm_content": "content"}  # fmt: skip

# Well-known hosts by medium, matched on the host and each parent domain ("l.facebook.com"
# is facebook.com's). Written for this project (not Snowplow's GPL referer list).
KNOWN_HOSTS: dict[str, tuple[str, str]] = {
    host: (medium, source)
    for medium, sources in {
        "search": {
            "Google": ("google.com", "google.co.uk", "google.de", "google.fr", "google.es",
                       "google.it", "google.ca", "google.com.au", "google.co.jp",
                       "google.com.br", "google.co.in", "google.nl", "google.pl"),
            "Bing": ("bing.com",), "DuckDuckGo": ("duckduckgo.com",),
            "Yahoo!": ("search.yahoo.com", "yahoo.co.jp"), "Yandex": ("yandex.ru", "ya.ru"),
            "Baidu": ("baidu.com",), "Ecosia": ("ecosia.org",), "Brave": ("search.brave.com",),
            "Naver": ("naver.com",), "Startpage": ("startpage.com",), "Qwant": ("qwant.com",),
        },
        "social": {
            "Facebook": ("facebook.com", "fb.com", "fb.me"), "Instagram": ("instagram.com",),
            "X": ("t.co", "x.com", "twitter.com"), "LinkedIn": ("linkedin.com", "lnkd.in"),
            "Reddit": ("reddit.com",), "YouTube": ("youtube.com", "youtu.be"),
            "TikTok": ("tiktok.com",), "Pinterest": ("pinterest.com", "pin.it"),
            "Threads": ("threads.net",), "Bluesky": ("bsky.app",),
            "Mastodon": ("mastodon.social",), "Hacker News": ("news.ycombinator.com",),
            "WhatsApp": ("whatsapp.com",), "Telegram": ("t.me",), "VK": ("vk.com",),
        },
        "email": {
            "Gmail": ("mail.google.com",), "Outlook.com": ("outlook.live.com",),
            "Outlook": ("outlook.office.com", "outlook.office365.com"),
            "Yahoo! Mail": ("mail.yahoo.com",), "Proton Mail": ("mail.proton.me",),
            "iCloud Mail": ("icloud.com",),
        },
        "chatbot": {
            "ChatGPT": ("chatgpt.com", "chat.openai.com"), "Claude": ("claude.ai",),
            "Gemini": ("gemini.google.com",), "Copilot": ("copilot.microsoft.com",),
            "Perplexity": ("perplexity.ai",), "Mistral": ("chat.mistral.ai",),
        },
    }.items()
    for source, hosts in sources.items()
    for host in hosts
}  # fmt: skip


def campaign(query: str, click_ids: Mapping[str, str]) -> dict[str, Any]:
    """The campaign a query string names: source, medium, name, term, content (from
    utm_*), click_id and network; empty when it names none. The first value wins."""
    if not query or ("utm_" not in query and not any(name in query for name in click_ids)):
        return {}
    found: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=False):
        field = _UTM.get(name)
        if field is not None:
            found.setdefault(field, value)
        elif name in click_ids and "click_id" not in found:
            found["click_id"], found["network"] = value, click_ids[name]
    return found


def page_query(url: str) -> str:
    """The query string of a page URL ("" without one)."""
    _, _, rest = url.partition("?")
    return rest.partition("#")[0]


class Referrers:
    """``member(referrer, page_host)``: the envelope's ``referrer`` member."""

    def __init__(self, own_hosts: Mapping[str, str], internal: tuple[str, ...]) -> None:
        self._hosts = {**{h: m for h, (m, _) in KNOWN_HOSTS.items()}, **own_hosts}
        self._sources = {h: s for h, (_, s) in KNOWN_HOSTS.items()}
        self._internal = frozenset(host.lower() for host in internal)
        self._cache: Bounded[tuple[str, str], dict[str, Any]] = Bounded(8192)

    def member(self, referrer: str, page_host: str) -> dict[str, Any]:
        if not referrer:
            return {"host": None, "medium": "direct", "source": None}
        key = (referrer, page_host)
        found = self._cache.get(key)
        if found is None:
            found = self._describe(referrer, page_host.lower().partition(":")[0])
            self._cache.put(key, found)
        return found

    def _describe(self, referrer: str, page_host: str) -> dict[str, Any]:
        try:
            host = (urlsplit(referrer).hostname or "").removeprefix("www.")
        except ValueError:
            host = ""
        if not host:
            return {"host": None, "medium": "unknown", "source": None}
        if host in self._internal or host == page_host.removeprefix("www."):
            return {"host": host, "medium": "internal", "source": None}
        candidate = host
        while candidate:
            medium = self._hosts.get(candidate)
            if medium is not None:
                return {"host": host, "medium": medium, "source": self._sources.get(candidate)}
            candidate = candidate.partition(".")[2]
        return {"host": host, "medium": "unknown", "source": None}
