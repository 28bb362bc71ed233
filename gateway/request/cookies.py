"""A request's cookies, parsed once per distinct Cookie header: a returning visitor
sends the same header request after request, and aiohttp's parser (http.cookies
Morsels) costs about 15 µs a time."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from aiohttp import web

from gateway.bounded import Bounded

_EMPTY: Mapping[str, str] = MappingProxyType({})
_parsed: Bounded[str, Mapping[str, str]] = Bounded(8192)


def cookies_of(request: web.BaseRequest) -> Mapping[str, str]:
    """name -> value (read-only: shared by every request with the same header)."""
    raw = request.headers.get("Cookie")
    if raw is None:
        return _EMPTY
    found = _parsed.get(raw)
    if found is None:
        found = MappingProxyType(dict(request.cookies))
        _parsed.put(raw, found)
    return found
