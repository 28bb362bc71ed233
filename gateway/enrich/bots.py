"""Bots: a verdict on the User-Agent and the address, with the name of what matched.

In this order: the user's own patterns, the crawler-user-agents list (about 1,500
patterns, first match wins, as in its JSON), ua-parser's spiders, then the user's IP
ranges. The list's patterns are matched by ua-parser-rs's Rust regex engine (2 µs for
all of them; Python's ``re`` takes several hundred µs for a browser, which must fail
every one). Verdicts are kept per agent, encoded.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.bounded import Bounded

if TYPE_CHECKING:
    from gateway.config.enrich import BotPattern

_encode = msgspec.json.Encoder().encode


@functools.cache
def crawler_list() -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """crawler-user-agents' entries as (pattern, name, tags), in its order; an entry is
    named by its pattern."""
    text = resources.files("crawleruseragents").joinpath("crawler-user-agents.json")
    entries = json.loads(text.read_text(encoding="utf-8"))
    return tuple((e["pattern"], e["pattern"], tuple(e.get("tags", ()))) for e in entries)


def _extractor(patterns: Sequence[str]) -> Any:
    """A matcher answering the index of the first pattern that matches, or None."""
    from ua_parser_rs import UserAgentExtractor

    return UserAgentExtractor(
        (pattern, str(index), None, None, None, None) for index, pattern in enumerate(patterns)
    )


@functools.cache
def _crawlers() -> Any:
    return _extractor([pattern for pattern, _, _ in crawler_list()])


class BotDetector:
    """``verdict(user_agent, ip, spider)``: the envelope's ``bot`` member, encoded, and
    whether it says bot. ``spider``: ua-parser named the agent a spider."""

    def __init__(
        self, patterns: Sequence[BotPattern], ip_ranges: Sequence[str], cache_size: int
    ) -> None:
        self._own = _extractor([p.pattern for p in patterns]) if patterns else None
        self._own_names = [p.name for p in patterns]
        self._ranges = [ipaddress.ip_network(r, strict=False) for r in ip_ranges]
        self._by_agent: Bounded[str, tuple[msgspec.Raw, bool]] = Bounded(cache_size)
        self._by_ip: Bounded[str, str | None] = Bounded(cache_size)
        self._not_checked = msgspec.Raw(_encode(_member(False, None, "not_checked", None)))
        _crawlers()  # built now (20 ms), not on the first event

    def verdict(
        self, user_agent: str, ip: str | None, spider: bool = False
    ) -> tuple[msgspec.Raw, bool]:
        key = f"{int(spider)}{user_agent}"
        found = self._by_agent.get(key)
        if found is None:
            fields = self._by_user_agent(user_agent, spider)
            found = (msgspec.Raw(_encode(fields)), fields["is_bot"])
            self._by_agent.put(key, found)
        if found[1] or not self._ranges or ip is None:
            return found
        network = self._network(ip)
        if network is None:
            return found
        return msgspec.Raw(_encode(_member(True, network, "ip_range", None))), True

    def _by_user_agent(self, user_agent: str, spider: bool) -> dict[str, Any]:
        if self._own is not None:
            match = self._own.extract(user_agent)
            if match is not None:
                return _member(True, self._own_names[int(match.family)], "pattern", None)
        match = _crawlers().extract(user_agent)
        if match is not None:
            _, name, tags = crawler_list()[int(match.family)]
            return _member(True, name, "list", tags[0] if tags else None)
        if spider:
            return _member(True, None, "ua_parser", None)
        return _member(False, None, None, None)

    def _network(self, ip: str) -> str | None:
        found = self._by_ip.get(ip, "")
        if found != "":
            return found
        network = None
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            pass
        else:
            for candidate in self._ranges:
                if address.version == candidate.version and address in candidate:
                    network = str(candidate)
                    break
        self._by_ip.put(ip, network)
        return network

    @property
    def not_checked(self) -> msgspec.Raw:
        """The member for an event whose origin is not checked (server SDKs, apps)."""
        return self._not_checked


def _member(is_bot: bool, name: str | None, by: str | None, category: str | None) -> dict[str, Any]:
    return {"is_bot": is_bot, "name": name, "by": by, "category": category}
