"""What makes two requests the same cached resource: the route, scheme, host, path and
query (with the route's rules for which query parameters count), request headers and
cookies the route adds; then, per answer, the values of the fields it ``Vary``s on."""

from __future__ import annotations

import fnmatch
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode

from multidict import CIMultiDictProxy

from gateway.config import CacheKey

Variant = tuple[str | None, ...]
SEPARATOR = "\x1f"  # never in a host, path, query or field value the shells let through


class KeySpec:
    """One route's key rules, built once per runtime."""

    __slots__ = ("_config", "route")

    def __init__(self, route: str, config: CacheKey) -> None:
        self.route = route
        self._config = config

    def key(
        self, scheme: str, host: str, path: str, query: str, headers: CIMultiDictProxy[str]
    ) -> str:
        """The primary key: GET and HEAD share it (a HEAD is answered from a GET)."""
        config = self._config
        parts = [self.route, scheme, host.lower(), path, self.query(query)]
        for name in config.headers:
            parts.append(", ".join(headers.getall(name, ())))
        if config.cookies:
            jar = _cookies(headers.get("Cookie", ""))
            parts.extend(jar.get(name, "") for name in config.cookies)
        return SEPARATOR.join(parts)

    def query(self, query: str) -> str:
        """The query as the key sees it: as sent unless the route drops, keeps only or
        sorts parameters (``utm_*`` and click ids rarely change an answer)."""
        config = self._config
        if not query or not (
            config.query_drop or config.query_keep is not None or config.sort_query
        ):
            return query if config.query else ""
        if not config.query:
            return ""
        pairs = parse_qsl(query, keep_blank_values=True)
        if config.query_keep is not None:
            pairs = [(k, v) for k, v in pairs if _listed(k, config.query_keep)]
        if config.query_drop:
            pairs = [(k, v) for k, v in pairs if not _listed(k, config.query_drop)]
        if config.sort_query:
            pairs.sort()
        return urlencode(pairs)


def _listed(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def variant(names: tuple[str, ...], headers: CIMultiDictProxy[str]) -> Variant:
    """The request's values of the fields an answer varies on: lines joined, spaces
    around commas dropped; a field that is absent is told apart from an empty one."""
    values: list[str | None] = []
    for name in names:
        lines = headers.getall(name, ())
        if not lines:
            values.append(None)
        else:
            values.append(",".join(part.strip() for line in lines for part in line.split(",")))
    return tuple(values)
