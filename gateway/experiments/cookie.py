"""The experiments cookie: ``name=variant`` pairs joined by ``&`` (URLSearchParams reads
it), not HttpOnly, so the page's JavaScript and the tracker's clients see what the
visitor was shown. Its names and values are the config's (lowercase names), so nothing
in it needs escaping; anything else a client puts there is ignored."""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.bounded import Bounded

_PAIR = re.compile(r"([a-z0-9][a-z0-9_-]{0,63})=([a-z0-9][a-z0-9_-]{0,63})")
_parsed: Bounded[str, dict[str, str]] = Bounded(4096)


def parse(value: str) -> dict[str, str]:
    """The assignments a cookie value holds (a shared dict: do not change it)."""
    found = _parsed.get(value)
    if found is None:
        found = {}
        for pair in value.split("&")[:32]:
            match = _PAIR.fullmatch(pair)
            if match is not None:
                found[match.group(1)] = match.group(2)
        _parsed.put(value, found)
    return found


def format_value(assignments: Mapping[str, str]) -> str:
    return "&".join(f"{name}={variant}" for name, variant in sorted(assignments.items()))
